#include "rules/rules.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// ---- allocation counting ---------------------------------------------------------------------
//
// match() must not allocate. The plain test binary proves it by replacing the global operator
// new with one that counts calls on the calling thread and forwards to malloc (operator delete
// forwards to free, so every other test in the binary behaves exactly as before: new[] and
// nothrow new in libstdc++ call this operator new, aligned new uses aligned_alloc/free on its own).
// The sanitizer binary does not replace it: ASan's own operator new/delete check new/delete
// mismatches for the whole binary, which a replacement would switch off; there the test skips.
#if defined(__SANITIZE_ADDRESS__)
#define NETMON_RULES_COUNT_NEW 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NETMON_RULES_COUNT_NEW 0
#endif
#endif
#ifndef NETMON_RULES_COUNT_NEW
#define NETMON_RULES_COUNT_NEW 1
#endif

#if NETMON_RULES_COUNT_NEW
namespace {
thread_local uint64_t g_new_calls = 0;
}  // namespace

// Not inlined: GCC would otherwise see free() on operator new's pointer at every call site
// (-Wmismatched-new-delete).
[[gnu::noinline]] void* operator new(std::size_t size) {
  ++g_new_calls;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif

namespace netmon {
namespace {

// ---- helpers ---------------------------------------------------------------------------------

IpAddress v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  IpAddress ip;
  ip.family = IpAddress::Family::kV4;
  ip.bytes[0] = a;
  ip.bytes[1] = b;
  ip.bytes[2] = c;
  ip.bytes[3] = d;
  return ip;
}

IpAddress v6(const char* text) {
  IpAddress ip;
  ip.family = IpAddress::Family::kV6;
  EXPECT_EQ(inet_pton(AF_INET6, text, ip.bytes.data()), 1) << text;
  return ip;
}

// One connection (and process) to evaluate rules against; owns what the RuleInput points to.
struct Conn {
  IpAddress saddr = v4(10, 0, 0, 1);
  IpAddress daddr = v4(10, 0, 0, 2);
  uint16_t sport = 40000;
  uint16_t dport = 80;
  std::string binary_path = "/usr/bin/curl";
  std::string parent_binary_path = "/bin/bash";
  std::optional<uint32_t> uid = 1000;
  const PodMeta* pod = nullptr;
  const ContainerMeta* container = nullptr;
  const Peer* peer = nullptr;
  const Peer* backend = nullptr;

  RuleInput input() const {
    RuleInput in;
    in.saddr = &saddr;
    in.daddr = &daddr;
    in.sport = sport;
    in.dport = dport;
    in.binary_path = binary_path;
    in.parent_binary_path = parent_binary_path;
    in.uid = uid;
    in.pod = pod;
    in.container = container;
    in.peer = peer;
    in.backend = backend;
    return in;
  }
};

Conn conn_v4(IpAddress s, IpAddress d, uint16_t dport) {
  Conn c;
  c.saddr = s;
  c.daddr = d;
  c.dport = dport;
  return c;
}

Conn conn_v6(const char* s, const char* d, uint16_t dport) {
  Conn c;
  c.saddr = v6(s);
  c.daddr = v6(d);
  c.dport = dport;
  return c;
}

using Lists = std::map<std::string, std::vector<std::string>>;
using Macros = std::map<std::string, std::string>;

RulesSpec one_rule(std::string scope, std::string event, Lists lists = {}, Macros macros = {}) {
  RulesSpec spec;
  spec.egress.rules.push_back(RuleSpec{"r", std::move(scope), std::move(event), 0});
  spec.lists = std::move(lists);
  spec.macros = std::move(macros);
  return spec;
}

// Compiles `spec`, expecting success; returns the egress rules.
RuleSet egress_of(const RulesSpec& spec) {
  auto compiled = compile_rules(spec);
  EXPECT_TRUE(compiled.has_value()) << (compiled ? "" : compiled.error().message);
  return compiled ? std::move(compiled->egress) : RuleSet();
}

// Whether the single rule `r` (scope, event) holds for `c`.
bool holds(const std::string& scope, const std::string& event, const Conn& c, Lists lists = {},
           Macros macros = {}) {
  const RuleSet set = egress_of(one_rule(scope, event, std::move(lists), std::move(macros)));
  EXPECT_TRUE(set.has_rules());
  const auto m = set.match(c.input());
  if (m) {
    EXPECT_EQ(*m, "r");
  }
  return m.has_value();
}

bool event_holds(const std::string& event, const Conn& c, Lists lists = {}, Macros macros = {}) {
  return holds("", event, c, std::move(lists), std::move(macros));
}

bool scope_holds(const std::string& scope, const Conn& c, Lists lists = {}, Macros macros = {}) {
  return holds(scope, "", c, std::move(lists), std::move(macros));
}

// Compiles `spec`, expecting failure; returns the message.
std::string error_of(const RulesSpec& spec) {
  auto compiled = compile_rules(spec);
  EXPECT_FALSE(compiled.has_value()) << "compiled without error";
  return compiled ? std::string() : compiled.error().message;
}

std::string event_error(std::string event, Lists lists = {}, Macros macros = {}) {
  return error_of(one_rule("", std::move(event), std::move(lists), std::move(macros)));
}

std::string scope_error(std::string scope, Lists lists = {}, Macros macros = {}) {
  return error_of(one_rule(std::move(scope), "", std::move(lists), std::move(macros)));
}

// ---- parsing ---------------------------------------------------------------------------------

TEST(RulesParse, EmptyScopeAndEventHoldForEverything) {
  Conn c;
  EXPECT_TRUE(holds("", "", c));
  EXPECT_TRUE(holds("  \n\t", " ", c));
  c.uid.reset();
  c.binary_path.clear();
  EXPECT_TRUE(holds("", "", c));
}

TEST(RulesParse, KeywordsAreCaseInsensitiveAndWhitespaceIsFree) {
  const Conn c = conn_v4(v4(10, 0, 0, 1), v4(10, 0, 0, 2), 80);
  EXPECT_TRUE(event_holds("port_dst == 80 and port_src == 40000", c));
  EXPECT_TRUE(event_holds("port_dst == 1 or port_dst == 80", c));
  EXPECT_TRUE(event_holds("not port_dst == 1", c));
  EXPECT_TRUE(event_holds("port_dst IN [80]", c));
  EXPECT_TRUE(event_holds("(port_dst==80)AND(port_src==40000)", c));
  EXPECT_TRUE(event_holds("\n  port_dst\t==\r\n80\n", c));
}

TEST(RulesParse, StringsTakeQuoteAndBackslashEscapes) {
  Conn c;
  c.binary_path = "/opt/we\"ird\\name";
  EXPECT_TRUE(scope_holds(R"(binary_path == "/opt/we\"ird\\name")", c));
  EXPECT_TRUE(scope_holds(R"(binary_name == "we\"ird\\name")", c));
  EXPECT_FALSE(scope_holds(R"(binary_path == "/opt/we\"ird")", c));
}

TEST(RulesParse, ListLiteralsMixQuotedStringsAndNumbersAsTheAttributeAllows) {
  const Conn c = conn_v4(v4(10, 0, 0, 1), v4(10, 0, 0, 2), 443);
  EXPECT_TRUE(event_holds(R"(port_dst in [80, "443", 8080])", c));
  EXPECT_TRUE(event_holds(R"(port_dst in [ 443 ])", c));
  EXPECT_FALSE(event_holds(R"(port_dst in [])", c));
  EXPECT_TRUE(event_holds(R"(NOT port_dst in [])", c));
  EXPECT_TRUE(event_holds(R"(ipv4_dst in ["192.168.0.0/16", "10.0.0.2"])", c));
}

// ---- precedence ------------------------------------------------------------------------------

TEST(RulesPrecedence, OrBindsLooserThanAnd) {
  // a OR b AND c == a OR (b AND c): with a true and c false it holds.
  Conn c;
  c.dport = 1;
  c.sport = 9;
  EXPECT_TRUE(event_holds("port_dst == 1 OR port_dst == 2 AND port_src == 3", c));
  EXPECT_FALSE(event_holds("(port_dst == 1 OR port_dst == 2) AND port_src == 3", c));
  // b AND c OR a == (b AND c) OR a.
  EXPECT_TRUE(event_holds("port_dst == 2 AND port_src == 3 OR port_dst == 1", c));
}

TEST(RulesPrecedence, NotBindsTighterThanAnd) {
  // NOT a AND b == (NOT a) AND b: with a true, b false -> false; NOT (a AND b) would be true.
  Conn c;
  c.dport = 1;
  c.sport = 3;
  EXPECT_FALSE(event_holds("NOT port_dst == 1 AND port_src == 2", c));
  EXPECT_TRUE(event_holds("NOT (port_dst == 1 AND port_src == 2)", c));
  EXPECT_TRUE(event_holds("NOT port_dst == 2 AND port_src == 3", c));
  // NOT a OR b == (NOT a) OR b.
  EXPECT_TRUE(event_holds("NOT port_dst == 1 OR port_src == 3", c));
  EXPECT_FALSE(event_holds("NOT (port_dst == 1 OR port_src == 3)", c));
}

TEST(RulesPrecedence, NotNestsAndParenthesesGroup) {
  Conn c;
  c.dport = 1;
  EXPECT_TRUE(event_holds("NOT NOT port_dst == 1", c));
  EXPECT_FALSE(event_holds("NOT NOT NOT port_dst == 1", c));
  EXPECT_TRUE(event_holds("((port_dst == 1))", c));
  EXPECT_TRUE(event_holds("(port_dst == 2 OR (port_dst == 1 AND NOT (port_src == 1)))", c));
  EXPECT_TRUE(event_holds("port_dst == 1 AND port_src == 40000 AND NOT port_dst == 5", c));
  EXPECT_TRUE(event_holds("port_dst == 3 OR port_dst == 4 OR port_dst == 1", c));
}

// ---- errors ----------------------------------------------------------------------------------

TEST(RulesErrors, MessageNamesDirectionRuleLineWhereAndColumn) {
  RulesSpec spec;
  spec.egress.rules.push_back({"ok", "", "port_dst == 1", 10});
  spec.egress.rules.push_back({"x", "", R"(port_dst == 1 AND ipv9_dst == "1.2.3.4")", 12});
  EXPECT_EQ(error_of(spec),
            R"(egress rule 'x' (line 12) event, column 19: unknown attribute 'ipv9_dst')");

  RulesSpec ingress;
  ingress.ingress.rules.push_back({"in-rule", "binary_nam == \"nc\"", "", 0});
  EXPECT_EQ(error_of(ingress),
            R"(ingress rule 'in-rule' scope, column 1: unknown attribute 'binary_nam')");
}

TEST(RulesErrors, MalformedExpressions) {
  EXPECT_EQ(event_error("(port_dst == 1"),
            "egress rule 'r' event, column 15: unbalanced parentheses: expected ')' for '(' at "
            "column 1, got end of expression");
  EXPECT_EQ(event_error("port_dst == 1)"),
            "egress rule 'r' event, column 14: unbalanced parentheses: ')' without '('");
  EXPECT_EQ(event_error(")"),
            "egress rule 'r' event, column 1: unbalanced parentheses: ')' without '('");
  EXPECT_EQ(event_error("port_dst == 1 AND"),
            "egress rule 'r' event, column 18: expected a predicate (attribute, macro, NOT or "
            "'('), got end of expression");
  EXPECT_EQ(event_error("OR port_dst == 1"),
            "egress rule 'r' event, column 1: expected a predicate (attribute, macro, NOT or "
            "'('), got OR");
  EXPECT_EQ(event_error("NOT"),
            "egress rule 'r' event, column 4: expected a predicate (attribute, macro, NOT or "
            "'('), got end of expression");
  EXPECT_EQ(event_error("port_dst =="),
            "egress rule 'r' event, column 12: expected a value after '==', got end of "
            "expression");
  EXPECT_EQ(event_error("port_dst == AND port_src == 1"),
            "egress rule 'r' event, column 13: expected a value after '==', got AND");
  EXPECT_EQ(event_error("port_dst"),
            "egress rule 'r' event, column 9: expected '==' or 'in' after 'port_dst', got end "
            "of expression");
  EXPECT_EQ(event_error("port_dst in"),
            "egress rule 'r' event, column 12: expected '[' or a list name after 'in', got end "
            "of expression");
  EXPECT_EQ(event_error("port_dst in [80, 443"),
            "egress rule 'r' event, column 21: expected ',' or ']' in the list opened at column "
            "13, got end of expression");
  EXPECT_EQ(event_error("port_dst in [80,]"),
            "egress rule 'r' event, column 17: expected a value or a list name in '[...]', got "
            "']'");
  EXPECT_EQ(scope_error(R"(binary_name == "nc)"),
            "egress rule 'r' scope, column 16: unterminated string");
  EXPECT_EQ(scope_error(R"(binary_name == "nc\)"),
            "egress rule 'r' scope, column 16: unterminated string");
  EXPECT_EQ(scope_error(R"(binary_name == "n\c")"),
            "egress rule 'r' scope, column 18: unknown escape '\\c' in string (only \\\" and \\\\ "
            "are escapes)");
  EXPECT_EQ(event_error("port_dst == 1 port_src == 2"),
            "egress rule 'r' event, column 15: expected AND, OR or end of expression, got "
            "'port_src'");
  EXPECT_EQ(event_error("port_dst = 1"),
            "egress rule 'r' event, column 10: unexpected '=': comparison is '=='");
  EXPECT_EQ(event_error("port_dst == 1 && port_src == 2"),
            "egress rule 'r' event, column 15: unexpected '&&': use AND");
  EXPECT_EQ(event_error("port_dst == 1 || port_src == 2"),
            "egress rule 'r' event, column 15: unexpected '||': use OR");
  EXPECT_EQ(event_error("!port_dst == 1"),
            "egress rule 'r' event, column 1: unexpected '!': use NOT");
  EXPECT_EQ(event_error("port_dst != 1"),
            "egress rule 'r' event, column 10: unexpected '!=': write NOT attribute == value");
  EXPECT_EQ(event_error("port_dst == 80AND port_src == 1"),
            "egress rule 'r' event, column 13: unquoted value '80AND': only numbers may be "
            "unquoted");
  EXPECT_EQ(event_error("ipv4_dst == 10.0.0.1"),
            "egress rule 'r' event, column 13: unquoted value '10.0.0.1': only numbers may be "
            "unquoted");
  EXPECT_EQ(event_error("ipv6_dst == ::1"),
            "egress rule 'r' event, column 13: unexpected character ':': addresses must be "
            "double-quoted");
  EXPECT_EQ(event_error("port_dst == 1 ; x"),
            "egress rule 'r' event, column 15: unexpected character ';'");
  EXPECT_EQ(event_error("port_dst == -1"),
            "egress rule 'r' event, column 13: unexpected character '-'");
  EXPECT_EQ(event_error(std::string("port_dst == 1 \x01")),
            "egress rule 'r' event, column 15: unexpected character '\\x01'");
  EXPECT_EQ(event_error("port_dst[\"a\"] == 1"),
            "egress rule 'r' event, column 9: attribute 'port_dst' takes no key");
  EXPECT_EQ(scope_error("pod_label == \"x\""),
            "egress rule 'r' scope, column 11: pod_label needs a key: pod_label[\"app\"], got "
            "'=='");
  EXPECT_EQ(scope_error("pod_label[app] == \"x\""),
            "egress rule 'r' scope, column 11: pod_label needs a double-quoted key, got 'app'");
  EXPECT_EQ(scope_error("pod_label[\"app\" == \"x\""),
            "egress rule 'r' scope, column 17: expected ']' after the label key, got '=='");
  EXPECT_EQ(event_error("\"x\" == port_dst"),
            "egress rule 'r' event, column 1: expected a predicate (attribute, macro, NOT or "
            "'('), got string 'x'");
}

TEST(RulesErrors, QuotedInputIsCapped) {
  // A 10 MB rule makes a message of a few hundred bytes.
  const std::string huge(10u << 20, 'a');
  for (const std::string& message :
       {event_error(huge), event_error("port_dst == " + std::string(10u << 20, '9')),
        event_error("ipv4_dst == " + std::string(10u << 20, '1')),
        event_error("ipv4_dst == \"" + huge + "\""), event_error("port_dst in [1, " + huge + "]"),
        scope_error("namespace == " + std::string(10u << 20, '7')),
        error_of(RulesSpec{{true, {RuleSpec{huge, "", "port_dst == 1 2", 0}}}, {}, {}, {}}),
        event_error("m", {}, {{"m", huge}})}) {
    EXPECT_LT(message.size(), 600u) << message.substr(0, 600);
    EXPECT_NE(message.find("...' (10485760 bytes)"), std::string::npos) << message.substr(0, 600);
  }
}

TEST(RulesErrors, NestingIsBounded) {
  std::string deep(200, '(');
  deep += "port_dst == 1";
  deep += std::string(200, ')');
  EXPECT_NE(event_error(deep).find("expression nested too deeply"), std::string::npos);
  std::string nots;
  for (int i = 0; i < 200; ++i) nots += "NOT ";
  EXPECT_NE(event_error(nots + "port_dst == 1").find("expression nested too deeply"),
            std::string::npos);
  // Long flat chains are not nesting.
  std::string chain = "port_dst == 0";
  for (int i = 1; i < 2000; ++i) chain += " OR port_dst == " + std::to_string(i);
  Conn c;
  c.dport = 1999;
  EXPECT_TRUE(event_holds(chain, c));
}

TEST(RulesErrors, UnknownAttributes) {
  EXPECT_EQ(event_error("ipv9_dst == \"1.2.3.4\""),
            "egress rule 'r' event, column 1: unknown attribute 'ipv9_dst'");
  EXPECT_EQ(event_error("dst_port in [1]"),
            "egress rule 'r' event, column 1: unknown attribute 'dst_port'");
  EXPECT_EQ(scope_error("labels[\"a\"] == \"b\""),
            "egress rule 'r' scope, column 1: unknown attribute 'labels'");
  // Attributes are case-sensitive.
  EXPECT_EQ(event_error("PORT_DST == 1"),
            "egress rule 'r' event, column 1: unknown attribute 'PORT_DST'");
}

TEST(RulesErrors, AttributesInTheWrongPlace) {
  EXPECT_EQ(scope_error("port_dst == 80"),
            "egress rule 'r' scope, column 1: attribute 'port_dst' belongs in event, not in "
            "scope");
  EXPECT_EQ(scope_error("binary_name == \"nc\" AND ipv4_dst == \"1.2.3.4\""),
            "egress rule 'r' scope, column 25: attribute 'ipv4_dst' belongs in event, not in "
            "scope");
  EXPECT_EQ(event_error("binary_name == \"nc\""),
            "egress rule 'r' event, column 1: attribute 'binary_name' belongs in scope, not in "
            "event");
  for (const char* scope_attr : {"binary_path", "binary_prefix", "parent_binary_path", "namespace",
                                 "pod", "container", "workload", "workload_kind"}) {
    EXPECT_NE(event_error(std::string(scope_attr) + " == \"x\"").find("belongs in scope"),
              std::string::npos)
        << scope_attr;
  }
  EXPECT_NE(event_error("uid == 0").find("belongs in scope"), std::string::npos);
  EXPECT_NE(event_error("pod_label[\"a\"] == \"b\"").find("belongs in scope"), std::string::npos);
  for (const char* event_attr : {"ipv4_src", "ipv6_src", "ipv6_dst", "port_src"}) {
    EXPECT_NE(scope_error(std::string(event_attr) + " == \"x\"").find("belongs in event"),
              std::string::npos)
        << event_attr;
  }
}

TEST(RulesErrors, BadAddressesAndCidrs) {
  EXPECT_EQ(event_error("ipv4_dst == \"garbage\""),
            "egress rule 'r' event, column 13: invalid address or CIDR 'garbage'");
  EXPECT_EQ(event_error("ipv4_dst == \"10.0.0.256\""),
            "egress rule 'r' event, column 13: invalid address or CIDR '10.0.0.256'");
  EXPECT_EQ(event_error("ipv4_dst == \"10.0.0\""),
            "egress rule 'r' event, column 13: invalid address or CIDR '10.0.0'");
  EXPECT_EQ(event_error("ipv4_dst == \"\""),
            "egress rule 'r' event, column 13: invalid address or CIDR ''");
  EXPECT_EQ(event_error("ipv4_dst == \" 10.0.0.1\""),
            "egress rule 'r' event, column 13: invalid address or CIDR ' 10.0.0.1'");
  EXPECT_EQ(event_error("ipv4_dst == \"10.0.0.0/33\""),
            "egress rule 'r' event, column 13: CIDR prefix length 33 in '10.0.0.0/33' is out "
            "of range for IPv4 (0-32)");
  EXPECT_EQ(event_error("ipv6_dst == \"fd00::/129\""),
            "egress rule 'r' event, column 13: CIDR prefix length 129 in 'fd00::/129' is out "
            "of range for IPv6 (0-128)");
  EXPECT_EQ(event_error("ipv4_dst == \"10.0.0.0/\""),
            "egress rule 'r' event, column 13: invalid CIDR prefix length in '10.0.0.0/'");
  EXPECT_EQ(event_error("ipv4_dst == \"10.0.0.0/x\""),
            "egress rule 'r' event, column 13: invalid CIDR prefix length in '10.0.0.0/x'");
  EXPECT_EQ(event_error("ipv4_dst == \"10.0.0.0/-1\""),
            "egress rule 'r' event, column 13: invalid CIDR prefix length in '10.0.0.0/-1'");
  EXPECT_EQ(event_error("ipv4_dst == \"10.0.0.0/0008\""),
            "egress rule 'r' event, column 13: invalid CIDR prefix length in '10.0.0.0/0008'");
  EXPECT_EQ(event_error("ipv4_dst == \"10.0.0.0/8/8\""),
            "egress rule 'r' event, column 13: invalid CIDR prefix length in '10.0.0.0/8/8'");
  EXPECT_EQ(event_error("ipv6_dst == \"fd00:::1\""),
            "egress rule 'r' event, column 13: invalid address or CIDR 'fd00:::1'");
  EXPECT_EQ(event_error("ipv4_dst == 10"),
            "egress rule 'r' event, column 13: ipv4_dst needs a double-quoted address or CIDR, "
            "got number 10");
  EXPECT_EQ(event_error("ipv4_dst in [\"10.0.0.0/8\", \"bad\"]"),
            "egress rule 'r' event, column 28: invalid address or CIDR 'bad'");
}

TEST(RulesErrors, AddressOfTheOtherFamily) {
  EXPECT_EQ(event_error("ipv4_dst == \"::1\""),
            "egress rule 'r' event, column 13: ipv4_dst needs an IPv4 address, got IPv6 '::1' "
            "(use ipv6_dst)");
  EXPECT_EQ(event_error("ipv4_src in [\"fd00::/8\"]"),
            "egress rule 'r' event, column 14: ipv4_src needs an IPv4 address, got IPv6 "
            "'fd00::/8' (use ipv6_src)");
  EXPECT_EQ(event_error("ipv6_dst == \"127.0.0.1\""),
            "egress rule 'r' event, column 13: ipv6_dst needs an IPv6 address, got IPv4 "
            "'127.0.0.1' (use ipv4_dst)");
  EXPECT_EQ(event_error("ipv6_src == \"10.0.0.0/8\""),
            "egress rule 'r' event, column 13: ipv6_src needs an IPv6 address, got IPv4 "
            "'10.0.0.0/8' (use ipv4_src)");
  // IPv4-mapped values can never match an ipv6_* attribute (such connections count as IPv4).
  EXPECT_EQ(event_error("ipv6_dst == \"::ffff:10.0.0.1\""),
            "egress rule 'r' event, column 13: ipv6_dst can never match the IPv4-mapped "
            "'::ffff:10.0.0.1': such connections count as IPv4 (use ipv4_dst)");
  EXPECT_NE(event_error("ipv6_dst == \"::ffff:0:0/96\"").find("IPv4-mapped"), std::string::npos);
  // ... and an ipv4_* attribute wants the IPv4 form.
  EXPECT_NE(event_error("ipv4_dst == \"::ffff:10.0.0.1\"").find("needs an IPv4 address"),
            std::string::npos);
}

TEST(RulesErrors, PortsAndUids) {
  EXPECT_EQ(event_error("port_dst == 65536"),
            "egress rule 'r' event, column 13: port 65536 is out of range (0-65535)");
  EXPECT_EQ(event_error("port_dst == 99999999999999999999999"),
            "egress rule 'r' event, column 13: port 99999999999999999999999 is out of range "
            "(0-65535)");
  EXPECT_EQ(event_error("port_src in [80, \"70000\"]"),
            "egress rule 'r' event, column 18: port 70000 is out of range (0-65535)");
  EXPECT_EQ(event_error("port_dst == \"http\""),
            "egress rule 'r' event, column 13: port_dst needs a port number, got 'http'");
  EXPECT_EQ(event_error("port_dst == \"\""),
            "egress rule 'r' event, column 13: port_dst needs a port number, got ''");
  EXPECT_EQ(event_error("port_dst == \" 80\""),
            "egress rule 'r' event, column 13: port_dst needs a port number, got ' 80'");
  EXPECT_EQ(event_error("port_dst == \"+80\""),
            "egress rule 'r' event, column 13: port_dst needs a port number, got '+80'");
  EXPECT_EQ(scope_error("uid == 4294967296"),
            "egress rule 'r' scope, column 8: uid 4294967296 is out of range (0-4294967295)");
  EXPECT_EQ(scope_error("uid == \"root\""),
            "egress rule 'r' scope, column 8: uid needs a numeric uid, got 'root'");
  EXPECT_EQ(scope_error("namespace == 12"),
            "egress rule 'r' scope, column 14: namespace needs a double-quoted string, got "
            "number 12");
}

TEST(RulesErrors, ListsAndMacros) {
  EXPECT_EQ(event_error("port_dst in nosuch"),
            "egress rule 'r' event, column 13: unknown list 'nosuch'");
  EXPECT_EQ(event_error("port_dst in [80, nosuch]"),
            "egress rule 'r' event, column 18: unknown list 'nosuch'");
  EXPECT_EQ(event_error("nosuch AND port_dst == 1"),
            "egress rule 'r' event, column 1: unknown attribute or macro 'nosuch'");
  EXPECT_EQ(event_error("port_dst in ports", {{"ports", {"80", "x"}}}),
            "egress rule 'r' event, column 13: list 'ports' item 2: port_dst needs a port "
            "number, got 'x'");
  EXPECT_EQ(event_error("ipv4_dst in nets", {{"nets", {"10.0.0.0/8", "fd00::/8"}}}),
            "egress rule 'r' event, column 13: list 'nets' item 2: ipv4_dst needs an IPv4 "
            "address, got IPv6 'fd00::/8' (use ipv6_dst)");
  // An error inside a macro names the macro and the column in it.
  EXPECT_EQ(event_error("port_dst == 1 OR web", {}, {{"web", "port_dst == 80 OR port_dsst == 8"}}),
            "egress rule 'r' event, column 18: in macro 'web', column 19: unknown attribute "
            "'port_dsst'");
  EXPECT_EQ(event_error("outer", {}, {{"outer", "NOT inner"}, {"inner", "port_dst == 99999"}}),
            "egress rule 'r' event, column 1: in macro 'outer', column 5: in macro 'inner', "
            "column 13: port 99999 is out of range (0-65535)");
  EXPECT_EQ(event_error("m", {}, {{"m", "(port_dst == 1"}}),
            "egress rule 'r' event, column 1: in macro 'm', column 15: unbalanced "
            "parentheses: expected ')' for '(' at column 1, got end of expression");
  EXPECT_EQ(event_error("m", {}, {{"m", "  "}}),
            "egress rule 'r' event, column 1: in macro 'm': empty macro");
  // A macro with process attributes used in event.
  EXPECT_EQ(event_error("m", {}, {{"m", "binary_name == \"nc\""}}),
            "egress rule 'r' event, column 1: in macro 'm', column 1: attribute "
            "'binary_name' belongs in scope, not in event");
  // A macro used as an attribute.
  EXPECT_EQ(event_error("m == 1", {}, {{"m", "port_dst == 1"}}),
            "egress rule 'r' event, column 1: unknown attribute 'm'");
}

TEST(RulesErrors, MacroCycles) {
  EXPECT_EQ(event_error("self", {}, {{"self", "port_dst == 1 OR self"}}),
            "egress rule 'r' event, column 1: macro cycle: self -> self");
  EXPECT_EQ(event_error("port_dst == 1 AND a", {}, {{"a", "b"}, {"b", "NOT c"}, {"c", "(a)"}}),
            "egress rule 'r' event, column 19: macro cycle: a -> b -> c -> a");
  // Unused cycles are found too.
  RulesSpec spec = one_rule("", "port_dst == 1", {}, {{"a", "b"}, {"b", "a"}});
  EXPECT_EQ(error_of(spec), "macro 'a': macro cycle: a -> b -> a");
}

TEST(RulesErrors, UnusedMacrosAreCheckedAndNamesAreIdentifiers) {
  EXPECT_EQ(error_of(one_rule("", "", {}, {{"unused", "port_dst == 1 AND"}})),
            "macro 'unused', column 18: expected a predicate (attribute, macro, NOT or '('), got "
            "end of expression");
  EXPECT_EQ(error_of(one_rule("", "", {}, {{"unused", "nosuch"}})),
            "macro 'unused', column 1: unknown attribute or macro 'nosuch'");
  // Unused macros may mix scope and event attributes: where they belong depends on the use.
  EXPECT_TRUE(compile_rules(one_rule("", "", {}, {{"mixed", "uid == 0 AND port_dst == 1"}})));

  EXPECT_EQ(error_of(one_rule("", "", {}, {{"my macro", "port_dst == 1"}})),
            "macro 'my macro': a name is letters, digits, '_' and '-', starts with a letter or "
            "'_', and is not AND, OR, NOT or in");
  EXPECT_EQ(error_of(one_rule("", "", {}, {{"and", "port_dst == 1"}})).substr(0, 14),
            "macro 'and': a");
  EXPECT_EQ(error_of(one_rule("", "", {}, {{"port_dst", "port_src == 1"}})),
            "macro 'port_dst': the name is an attribute's");
  EXPECT_EQ(error_of(one_rule("", "", {{"1list", {"1"}}})).substr(0, 16), "list '1list': a ");
  EXPECT_EQ(error_of(one_rule("", "", {{"In", {"1"}}})).substr(0, 13), "list 'In': a ");
}

TEST(RulesErrors, RuleNames) {
  RulesSpec spec;
  spec.egress.rules.push_back({"a", "", "", 3});
  spec.egress.rules.push_back({"b", "", "", 4});
  spec.egress.rules.push_back({"a", "", "", 7});
  EXPECT_EQ(error_of(spec), "egress rule 'a' (line 7): duplicate rule name (first at line 3)");

  RulesSpec no_lines;
  no_lines.ingress.rules.push_back({"a", "", ""});
  no_lines.ingress.rules.push_back({"a", "", ""});
  EXPECT_EQ(error_of(no_lines), "ingress rule 'a': duplicate rule name");

  // The same name in both directions is fine.
  RulesSpec both;
  both.egress.rules.push_back({"a", "", ""});
  both.ingress.rules.push_back({"a", "", ""});
  EXPECT_TRUE(compile_rules(both));

  RulesSpec unnamed;
  unnamed.egress.rules.push_back({"", "", "", 5});
  EXPECT_EQ(error_of(unnamed), "egress rule '' (line 5): the rule has no name");
}

// ---- addresses and ports ---------------------------------------------------------------------

TEST(RulesAddresses, Ipv4ExactAndCidr) {
  const Conn c = conn_v4(v4(192, 168, 1, 10), v4(172, 20, 3, 4), 443);
  EXPECT_TRUE(event_holds("ipv4_dst == \"172.20.3.4\"", c));
  EXPECT_FALSE(event_holds("ipv4_dst == \"172.20.3.5\"", c));
  EXPECT_TRUE(event_holds("ipv4_src == \"192.168.1.10\"", c));
  EXPECT_FALSE(event_holds("ipv4_src == \"172.20.3.4\"", c));
  EXPECT_TRUE(event_holds("ipv4_dst == \"172.16.0.0/12\"", c));  // not on an octet boundary
  EXPECT_FALSE(event_holds("ipv4_dst == \"172.16.0.0/14\"", c));
  EXPECT_TRUE(event_holds("ipv4_dst == \"172.20.3.4/32\"", c));
  EXPECT_TRUE(event_holds("ipv4_dst == \"0.0.0.0/0\"", c));
  EXPECT_TRUE(event_holds("ipv4_src == \"192.168.0.0/16\"", c));
  EXPECT_TRUE(event_holds("ipv4_src == \"192.168.1.11/31\"", c));  // host bits are ignored
  EXPECT_FALSE(event_holds("ipv4_src == \"192.168.1.12/31\"", c));
  EXPECT_TRUE(event_holds("ipv4_dst in [\"10.0.0.0/8\", \"172.16.0.0/12\"]", c));
  EXPECT_FALSE(event_holds("ipv4_dst in [\"10.0.0.0/8\", \"192.168.0.0/16\"]", c));
}

TEST(RulesAddresses, Ipv6ExactAndCidr) {
  const Conn c = conn_v6("2001:db8::1", "fd12:3456::abcd", 443);
  EXPECT_TRUE(event_holds("ipv6_dst == \"fd12:3456::abcd\"", c));
  EXPECT_TRUE(event_holds("ipv6_dst == \"FD12:3456:0::ABCD\"", c));
  EXPECT_FALSE(event_holds("ipv6_dst == \"fd12:3456::abce\"", c));
  EXPECT_TRUE(event_holds("ipv6_dst == \"fc00::/7\"", c));
  EXPECT_FALSE(event_holds("ipv6_dst == \"fc00::/8\"", c));
  EXPECT_TRUE(event_holds("ipv6_src == \"2001:db8::/32\"", c));
  EXPECT_TRUE(event_holds("ipv6_src == \"2001:db8::/127\"", c));
  EXPECT_FALSE(event_holds("ipv6_src == \"2001:db8::2/127\"", c));
  EXPECT_TRUE(event_holds("ipv6_src == \"::/0\"", c));
  EXPECT_TRUE(event_holds("ipv6_dst == \"fd12:3456::abcd/128\"", c));
  EXPECT_TRUE(event_holds("ipv6_dst == \"fd12:3456::ab80/121\"", c));
  EXPECT_FALSE(event_holds("ipv6_dst == \"fd12:3456::ab80/122\"", c));
}

TEST(RulesAddresses, AttributesOfTheOtherFamilyAreFalse) {
  const Conn c4 = conn_v4(v4(127, 0, 0, 1), v4(127, 0, 0, 1), 80);
  const Conn c6 = conn_v6("::1", "::1", 80);
  EXPECT_FALSE(event_holds("ipv6_dst == \"::/0\"", c4));
  EXPECT_FALSE(event_holds("ipv6_src == \"::/0\"", c4));
  EXPECT_TRUE(event_holds("NOT ipv6_dst == \"::/0\"", c4));
  EXPECT_FALSE(event_holds("ipv4_dst == \"0.0.0.0/0\"", c6));
  EXPECT_FALSE(event_holds("ipv4_src == \"0.0.0.0/0\"", c6));
  EXPECT_TRUE(event_holds("NOT ipv4_dst in [\"10.0.0.0/8\"]", c6));
  // Either family.
  const std::string either = "ipv4_dst == \"127.0.0.1\" OR ipv6_dst == \"::1\"";
  EXPECT_TRUE(event_holds(either, c4));
  EXPECT_TRUE(event_holds(either, c6));
  // Missing addresses are unknown: false.
  Conn none;
  RuleInput in = none.input();
  in.saddr = nullptr;
  in.daddr = nullptr;
  const RuleSet set = egress_of(one_rule("", "ipv4_dst == \"0.0.0.0/0\" OR ipv6_src == \"::/0\""));
  EXPECT_FALSE(set.match(in));
}

TEST(RulesAddresses, Ipv4MappedAddressesCountAsIpv4) {
  const Conn c = conn_v6("::ffff:10.1.2.3", "::ffff:192.168.7.8", 80);
  EXPECT_TRUE(event_holds("ipv4_src == \"10.1.2.3\"", c));
  EXPECT_TRUE(event_holds("ipv4_dst == \"192.168.0.0/16\"", c));
  EXPECT_FALSE(event_holds("ipv4_dst == \"10.0.0.0/8\"", c));
  EXPECT_FALSE(event_holds("ipv6_dst == \"::/0\"", c));
  EXPECT_FALSE(event_holds("ipv6_src == \"::/0\"", c));
  // Only ::ffff:0:0/96 is mapped: ::a.b.c.d (IPv4-compatible) and 64:ff9b::/96 are IPv6.
  const Conn compat = conn_v6("::10.1.2.3", "64:ff9b::10.1.2.3", 80);
  EXPECT_FALSE(event_holds("ipv4_src == \"10.1.2.3\"", compat));
  EXPECT_FALSE(event_holds("ipv4_dst == \"10.1.2.3\"", compat));
  EXPECT_TRUE(event_holds("ipv6_src == \"::10.1.2.3\"", compat));
  EXPECT_TRUE(event_holds("ipv6_dst == \"64:ff9b::/96\"", compat));
  // A CIDR wider than the mapped range is a fine ipv6_* value; mapped connections still do not
  // match it.
  EXPECT_FALSE(event_holds("ipv6_dst == \"::/64\"", c));
}

TEST(RulesPorts, EqualityListsAndBounds) {
  Conn c;
  c.sport = 0;
  c.dport = 65535;
  EXPECT_TRUE(event_holds("port_src == 0 AND port_dst == 65535", c));
  EXPECT_TRUE(event_holds("port_dst == \"65535\"", c));
  EXPECT_TRUE(event_holds("port_dst == 0065535", c));
  EXPECT_FALSE(event_holds("port_dst == 65534", c));
  EXPECT_TRUE(event_holds("port_dst in [1, 2, 65535]", c));
  EXPECT_FALSE(event_holds("port_src in [1, 2, 65535]", c));
  EXPECT_TRUE(event_holds("port_dst in ports", c, {{"ports", {"80", "65535"}}}));
  EXPECT_FALSE(event_holds("port_dst in ports", c, {{"ports", {}}}));
}

// ---- lists and macros ------------------------------------------------------------------------

TEST(RulesListsMacros, ListsByNameAndSplicedIntoLiterals) {
  const Lists lists = {{"private", {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}},
                       {"web", {"80", "443"}},
                       {"shells", {"/bin/bash", "/bin/sh"}}};
  Conn c = conn_v4(v4(10, 9, 8, 7), v4(8, 8, 8, 8), 443);
  EXPECT_TRUE(event_holds("ipv4_src in private AND NOT ipv4_dst in private", c, lists));
  EXPECT_TRUE(event_holds("port_dst in web", c, lists));
  EXPECT_TRUE(event_holds("port_dst in [22, web]", c, lists));
  EXPECT_TRUE(event_holds("ipv4_dst in [private, \"8.8.8.8\"]", c, lists));
  EXPECT_FALSE(event_holds("ipv4_dst in [private, \"8.8.4.4\"]", c, lists));
  EXPECT_TRUE(scope_holds("parent_binary_path in shells", c, lists));
  // The same list may serve several attributes when its values fit each.
  EXPECT_TRUE(holds("uid in ids", "port_dst in ids", c, {{"ids", {"443", "1000"}}}));
}

TEST(RulesListsMacros, MacrosExpandNestAndMayBeReused) {
  const Macros macros = {{"private_dst", "ipv4_dst in private"},
                         {"web", "port_dst in [80, 443]"},
                         {"egress_web", "NOT private_dst AND web"},
                         {"is_curl", "binary_name == \"curl\""}};
  const Lists lists = {{"private", {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}}};
  Conn c = conn_v4(v4(10, 0, 0, 1), v4(1, 1, 1, 1), 443);
  EXPECT_TRUE(holds("is_curl", "egress_web", c, lists, macros));
  EXPECT_TRUE(holds("is_curl", "egress_web AND web AND NOT private_dst", c, lists, macros));
  c.dport = 22;
  EXPECT_FALSE(holds("is_curl", "egress_web", c, lists, macros));
  EXPECT_TRUE(holds("is_curl", "NOT egress_web", c, lists, macros));
  // Macros hold whole sub-expressions: NOT m negates all of m, and m AND x does not re-associate.
  c.dport = 443;
  c.daddr = v4(10, 1, 1, 1);
  EXPECT_TRUE(event_holds("NOT either", c, {}, {{"either", "port_dst == 1 OR port_dst == 2"}}));
  EXPECT_FALSE(event_holds("either AND port_dst == 1", c, {},
                           {{"either", "port_dst == 443 OR port_dst == 1"}}));

  // One macro in several rules of both directions (compiled once per direction and use).
  RulesSpec spec;
  spec.macros = macros;
  spec.lists = lists;
  spec.egress.rules.push_back({"a", "is_curl", "web AND private_dst"});
  spec.egress.rules.push_back({"b", "NOT is_curl", "web"});
  spec.egress.rules.push_back({"c", "is_curl", "egress_web"});
  spec.ingress.rules.push_back({"d", "is_curl AND NOT is_curl", "web"});
  spec.ingress.rules.push_back({"e", "is_curl OR is_curl", "web OR private_dst"});
  const auto compiled = compile_rules(spec);
  ASSERT_TRUE(compiled) << compiled.error().message;
  c.daddr = v4(1, 1, 1, 1);
  EXPECT_EQ(compiled->egress.match(c.input()), "c");
  EXPECT_EQ(compiled->ingress.match(c.input()), "e");
  c.binary_path = "/bin/wget";
  EXPECT_EQ(compiled->egress.match(c.input()), "b");
  EXPECT_EQ(compiled->ingress.match(c.input()), std::nullopt);
}

TEST(RulesListsMacros, MacroDependingOnUseIsCheckedPerUse) {
  const Macros macros = {{"either", "uid == 1000 OR port_dst == 443"}};
  EXPECT_EQ(error_of(one_rule("either", "", {}, macros)),
            "egress rule 'r' scope, column 1: in macro 'either', column 16: attribute "
            "'port_dst' belongs in event, not in scope");
}

TEST(RulesListsMacros, DeepSharingIsBoundedAfterExpansion) {
  // m0 = port_dst == 1, m(k) = m(k-1) OR m(k-1): the expansion doubles with each level.
  Macros macros = {{"m0", "port_dst == 1"}};
  const auto name = [](int k) {
    std::string m = "m";  // appended: GCC 12 -O3 false -Wrestrict on "m" + std::string
    m += std::to_string(k);
    return m;
  };
  for (int k = 1; k <= 30; ++k) macros[name(k)] = name(k - 1) + " OR " + name(k - 1);
  EXPECT_NE(event_error("m30", {}, macros).find("expression too large after macro expansion"),
            std::string::npos);
  Conn c;
  c.dport = 1;
  EXPECT_TRUE(event_holds("m10", c, {}, macros));
}

// ---- matching --------------------------------------------------------------------------------

TEST(RulesMatch, FirstMatchingRuleInOrderWins) {
  RulesSpec spec;
  spec.egress.rules.push_back({"ssh", "", "port_dst == 22"});
  spec.egress.rules.push_back({"curl-web", "binary_name == \"curl\"", "port_dst in [80, 443]"});
  spec.egress.rules.push_back({"web", "", "port_dst in [80, 443]"});
  spec.egress.rules.push_back({"catch-all", "", ""});
  const RuleSet set = egress_of(spec);
  Conn c;
  c.dport = 22;
  EXPECT_EQ(set.match(c.input()), "ssh");
  c.dport = 443;
  EXPECT_EQ(set.match(c.input()), "curl-web");
  c.binary_path = "/usr/bin/wget";
  EXPECT_EQ(set.match(c.input()), "web");
  c.dport = 5432;
  EXPECT_EQ(set.match(c.input()), "catch-all");
}

TEST(RulesMatch, ScopeAndEventMustBothHold) {
  const RuleSet set = egress_of(one_rule("binary_name == \"nc\"", "port_dst == 1"));
  Conn c;
  c.binary_path = "/bin/nc";
  c.dport = 1;
  EXPECT_EQ(set.match(c.input()), "r");
  c.dport = 2;
  EXPECT_FALSE(set.match(c.input()));
  c.dport = 1;
  c.binary_path = "/bin/ncat";
  EXPECT_FALSE(set.match(c.input()));
}

TEST(RulesMatch, HasRulesAndEnabled) {
  const RuleSet defaults;
  EXPECT_TRUE(defaults.enabled());
  EXPECT_FALSE(defaults.has_rules());
  EXPECT_FALSE(defaults.match(Conn().input()));

  RulesSpec spec;
  spec.egress.rules.push_back({"all", "", ""});
  spec.ingress.enabled = false;
  auto compiled = compile_rules(spec);
  ASSERT_TRUE(compiled) << compiled.error().message;
  EXPECT_TRUE(compiled->egress.enabled());
  EXPECT_TRUE(compiled->egress.has_rules());
  EXPECT_EQ(compiled->egress.match(Conn().input()), "all");
  EXPECT_FALSE(compiled->ingress.enabled());
  EXPECT_FALSE(compiled->ingress.has_rules());
  EXPECT_FALSE(compiled->ingress.match(Conn().input()));

  // A disabled direction's rules are still compiled (and checked).
  RulesSpec disabled;
  disabled.egress.enabled = false;
  disabled.egress.rules.push_back({"bad", "", "port_dst == x"});
  EXPECT_NE(error_of(disabled).find("egress rule 'bad'"), std::string::npos);
  disabled.egress.rules[0].event = "port_dst == 1";
  compiled = compile_rules(disabled);
  ASSERT_TRUE(compiled);
  EXPECT_FALSE(compiled->egress.enabled());
  EXPECT_TRUE(compiled->egress.has_rules());

  // Moving keeps the rules.
  RuleSet moved = std::move(compiled->egress);
  EXPECT_FALSE(moved.enabled());
  EXPECT_TRUE(moved.has_rules());
  RuleSet assigned;
  assigned = std::move(moved);
  EXPECT_TRUE(assigned.has_rules());
}

TEST(RulesMatch, EmptyRuleSetsMatchNothing) {
  const auto compiled = compile_rules(RulesSpec{});
  ASSERT_TRUE(compiled);
  EXPECT_TRUE(compiled->egress.enabled());
  EXPECT_FALSE(compiled->egress.has_rules());
  EXPECT_FALSE(compiled->egress.match(Conn().input()));
  EXPECT_FALSE(compiled->ingress.has_rules());
}

// ---- scope: process and Kubernetes -----------------------------------------------------------

TEST(RulesProcess, BinaryAttributes) {
  Conn c;
  c.binary_path = "/usr/local/bin/nc.openbsd";
  EXPECT_TRUE(scope_holds("binary_path == \"/usr/local/bin/nc.openbsd\"", c));
  EXPECT_FALSE(scope_holds("binary_path == \"nc.openbsd\"", c));
  EXPECT_TRUE(scope_holds("binary_name == \"nc.openbsd\"", c));
  EXPECT_FALSE(scope_holds("binary_name == \"nc\"", c));
  EXPECT_TRUE(scope_holds("binary_name in [\"nc\", \"nc.openbsd\"]", c));
  EXPECT_TRUE(scope_holds("binary_prefix == \"/usr/local/\"", c));
  EXPECT_TRUE(scope_holds("binary_prefix == \"/usr/local/bin/nc\"", c));
  EXPECT_FALSE(scope_holds("binary_prefix == \"/usr/bin/\"", c));
  EXPECT_TRUE(scope_holds("binary_prefix in [\"/usr/bin/\", \"/usr/local/\"]", c));
  EXPECT_TRUE(scope_holds("binary_prefix == \"\"", c));
  // A path without a slash is its own name.
  c.binary_path = "busybox";
  EXPECT_TRUE(scope_holds("binary_name == \"busybox\"", c));
  // An unknown binary: every binary attribute is false.
  c.binary_path.clear();
  EXPECT_FALSE(scope_holds("binary_path == \"\"", c));
  EXPECT_FALSE(scope_holds("binary_name == \"\"", c));
  EXPECT_FALSE(scope_holds("binary_prefix == \"\"", c));
  EXPECT_TRUE(scope_holds("NOT binary_prefix == \"/\"", c));
}

TEST(RulesProcess, UidAndParentBinaryPath) {
  Conn c;
  c.uid = 0;
  c.parent_binary_path = "/usr/sbin/sshd";
  EXPECT_TRUE(scope_holds("uid == 0", c));
  EXPECT_TRUE(scope_holds("uid == \"0\"", c));
  EXPECT_FALSE(scope_holds("uid == 1000", c));
  EXPECT_TRUE(scope_holds("uid in [1000, 0]", c));
  c.uid = 4294967295u;
  EXPECT_TRUE(scope_holds("uid == 4294967295", c));
  c.uid.reset();
  EXPECT_FALSE(scope_holds("uid == 0", c));
  EXPECT_FALSE(scope_holds("uid in [0, 4294967295]", c));
  EXPECT_TRUE(scope_holds("NOT uid == 0", c));

  EXPECT_TRUE(scope_holds("parent_binary_path == \"/usr/sbin/sshd\"", c));
  EXPECT_FALSE(scope_holds("parent_binary_path == \"/bin/bash\"", c));
  c.parent_binary_path.clear();
  EXPECT_FALSE(scope_holds("parent_binary_path == \"\"", c));
  EXPECT_TRUE(scope_holds("binary_name == \"curl\" AND NOT parent_binary_path == \"/bin/sh\"", c));
}

PodMeta fake_pod() {
  PodMeta pod;
  pod.namespace_name = "shop";
  pod.name = "web-7d4b9c-x2x9z";
  pod.uid = "0f1e2d3c";
  pod.workload = "web";
  pod.workload_kind = "Deployment";
  pod.node_name = "node-1";
  pod.labels = {{"app", "web"}, {"empty", ""}, {"pod-template-hash", "7d4b9c"}, {"tier", "front"}};
  pod.containers.push_back(ContainerMeta{"abc123", "containerd", "nginx", "nginx:1.25", "sha"});
  return pod;
}

TEST(RulesKubernetes, PodAttributes) {
  const PodMeta pod = fake_pod();
  Conn c;
  c.pod = &pod;
  c.container = &pod.containers[0];
  EXPECT_TRUE(scope_holds("namespace == \"shop\"", c));
  EXPECT_FALSE(scope_holds("namespace == \"kube-system\"", c));
  EXPECT_TRUE(scope_holds("namespace in [\"kube-system\", \"shop\"]", c));
  EXPECT_TRUE(scope_holds("pod == \"web-7d4b9c-x2x9z\"", c));
  EXPECT_TRUE(scope_holds("container == \"nginx\"", c));
  EXPECT_FALSE(scope_holds("container == \"sidecar\"", c));
  EXPECT_TRUE(scope_holds("workload == \"web\" AND workload_kind == \"Deployment\"", c));
  EXPECT_FALSE(scope_holds("workload_kind == \"StatefulSet\"", c));
  EXPECT_TRUE(scope_holds("pod_label[\"app\"] == \"web\"", c));
  EXPECT_TRUE(scope_holds("pod_label[\"tier\"] in [\"back\", \"front\"]", c));
  EXPECT_FALSE(scope_holds("pod_label[\"app\"] == \"db\"", c));
  EXPECT_TRUE(scope_holds("pod_label[\"empty\"] == \"\"", c));
  EXPECT_FALSE(scope_holds("pod_label[\"missing\"] == \"\"", c));
  EXPECT_TRUE(scope_holds("NOT pod_label[\"missing\"] == \"x\"", c));
  EXPECT_TRUE(scope_holds("pod_label[\"pod-template-hash\"] == \"7d4b9c\"", c));
  EXPECT_TRUE(scope_holds("namespace == \"shop\" AND binary_name == \"curl\" AND uid == 1000", c));
  // Labels are looked up whatever their order.
  PodMeta unsorted = pod;
  std::swap(unsorted.labels.front(), unsorted.labels.back());
  c.pod = &unsorted;
  EXPECT_TRUE(scope_holds("pod_label[\"app\"] == \"web\"", c));
  // A pod without a known container: container is false, the rest still holds.
  c.pod = &pod;
  c.container = nullptr;
  EXPECT_FALSE(scope_holds("container == \"nginx\"", c));
  EXPECT_TRUE(scope_holds("namespace == \"shop\"", c));
}

TEST(RulesKubernetes, HostProcessesHaveNoKubernetesAttributes) {
  // Two-valued logic: for a host process every Kubernetes predicate is false and its negation
  // true (`NOT namespace == "x"` holds: the process is not in namespace x).
  const Conn host;
  for (const char* p : {"namespace == \"shop\"", "pod == \"x\"", "container == \"nginx\"",
                        "workload == \"web\"", "workload_kind == \"Node\"",
                        "pod_label[\"app\"] == \"web\"", "namespace == \"\"", "pod in [\"\"]"}) {
    EXPECT_FALSE(scope_holds(p, host)) << p;
    EXPECT_TRUE(scope_holds(std::string("NOT ") + p, host)) << p;
  }
  // A container without a pod counts as none.
  const PodMeta pod = fake_pod();
  Conn orphan;
  orphan.container = &pod.containers[0];
  EXPECT_FALSE(scope_holds("container == \"nginx\"", orphan));
}

// ---- peers (issue #19) -------------------------------------------------------------------------

const PeerLabel kPeerLabels[] = {{"app", "db"}, {"empty", ""}, {"tier", "backend"}};

Peer peer_pod() {
  Peer p;
  p.kind = PeerKind::kPod;
  p.namespace_name = "payments";
  p.name = "db-0";
  p.uid = "u-db-0";
  p.workload = "db";
  p.workload_kind = "StatefulSet";
  p.labels = kPeerLabels;
  return p;
}

Peer peer_service() {
  Peer p;
  p.kind = PeerKind::kService;
  p.namespace_name = "shop";
  p.name = "web";
  p.uid = "u-web";
  p.port_name = "http";
  p.service_type = "ClusterIP";
  return p;
}

Peer peer_external(std::string_view network) {
  Peer p;
  p.kind = PeerKind::kExternal;
  p.network = network;
  return p;
}

TEST(RulesPeer, KindOfEachPeer) {
  Conn c;
  const Peer pod = peer_pod();
  const Peer service = peer_service();
  Peer node;
  node.kind = PeerKind::kNode;
  node.name = "node-1";
  Peer host;
  host.kind = PeerKind::kHost;
  const Peer external = peer_external("internet");
  const std::pair<const Peer*, const char*> cases[] = {{&pod, "pod"},
                                                       {&service, "service"},
                                                       {&node, "node"},
                                                       {&host, "host"},
                                                       {&external, "external"}};
  for (const auto& [peer, kind] : cases) {
    c.peer = peer;
    for (const char* other : {"pod", "service", "node", "host", "external"}) {
      EXPECT_EQ(event_holds(std::string("peer_kind == \"") + other + "\"", c),
                std::string_view(other) == kind)
          << kind << " vs " << other;
    }
  }
  c.peer = &pod;
  EXPECT_TRUE(event_holds(R"(peer_kind in ["service", "pod"])", c));
  EXPECT_TRUE(event_holds("peer_kind in kinds", c, {{"kinds", {"node", "pod"}}}));
}

TEST(RulesPeer, PodAttributes) {
  const Peer pod = peer_pod();
  Conn c;
  c.peer = &pod;
  EXPECT_TRUE(event_holds(R"(peer_namespace == "payments")", c));
  EXPECT_FALSE(event_holds(R"(peer_namespace == "shop")", c));
  EXPECT_TRUE(event_holds(R"(peer_pod == "db-0")", c));
  EXPECT_TRUE(event_holds(R"(peer_workload == "db")", c));
  EXPECT_TRUE(event_holds(R"(peer_label["app"] == "db")", c));
  EXPECT_TRUE(event_holds(R"(peer_label["tier"] in ["frontend", "backend"])", c));
  EXPECT_FALSE(event_holds(R"(peer_label["app"] == "web")", c));
  EXPECT_FALSE(event_holds(R"(peer_label["missing"] == "")", c));
  EXPECT_TRUE(event_holds(R"(peer_label["empty"] == "")", c));  // a label whose value is ""
  // A pod has no service and no network.
  EXPECT_FALSE(event_holds(R"(peer_service == "db-0")", c));
  EXPECT_FALSE(event_holds(R"(peer_network == "internet")", c));
  // Combined with the connection's own attributes.
  EXPECT_TRUE(event_holds(R"(peer_pod == "db-0" AND port_dst == 80)", c));
  // A pod only an EndpointSlice names: no workload known.
  Peer bare = pod;
  bare.workload = {};
  bare.labels = {};
  c.peer = &bare;
  EXPECT_FALSE(event_holds(R"(peer_workload == "")", c));
  EXPECT_TRUE(event_holds(R"(NOT peer_workload == "db")", c));
  EXPECT_FALSE(event_holds(R"(peer_label["app"] == "db")", c));
}

// Issue #20: a connection to a service that the node translated to a pod: peer_pod, peer_workload
// and peer_label are the backend pod's; peer_kind, peer_namespace and peer_service the service's.
TEST(RulesPeer, ATranslatedServiceConnectionIsNamedByItsBackendPod) {
  const Peer service = peer_service();
  const Peer pod = peer_pod();
  Conn c;
  c.peer = &service;
  c.backend = &pod;
  EXPECT_TRUE(event_holds(R"(peer_kind == "service")", c));
  EXPECT_TRUE(event_holds(R"(peer_service == "web")", c));
  EXPECT_TRUE(event_holds(R"(peer_namespace == "shop")", c));
  EXPECT_TRUE(event_holds(R"(peer_workload == "db")", c));
  EXPECT_TRUE(event_holds(R"(peer_pod == "db-0")", c));
  EXPECT_TRUE(event_holds(R"(peer_label["app"] == "db")", c));
  // A backend that is not a pod (a node, a host address) names nothing of a pod.
  Peer node;
  node.kind = PeerKind::kNode;
  node.name = "node-1";
  c.backend = &node;
  EXPECT_FALSE(event_holds(R"(peer_pod == "node-1")", c));
  EXPECT_FALSE(event_holds(R"(peer_workload == "db")", c));
  EXPECT_TRUE(event_holds(R"(peer_service == "web")", c));
}

TEST(RulesPeer, ServiceAndExternalAttributes) {
  const Peer service = peer_service();
  Conn c;
  c.peer = &service;
  EXPECT_TRUE(event_holds(R"(peer_service == "web")", c));
  EXPECT_TRUE(event_holds(R"(peer_namespace == "shop")", c));
  EXPECT_FALSE(event_holds(R"(peer_pod == "web")", c));
  EXPECT_FALSE(event_holds(R"(peer_workload == "web")", c));
  EXPECT_FALSE(event_holds(R"(peer_label["app"] == "web")", c));

  const Peer internet = peer_external("internet");
  const Peer metadata = peer_external("metadata");
  c.peer = &internet;
  EXPECT_TRUE(event_holds(R"(peer_network == "internet")", c));
  EXPECT_FALSE(event_holds(R"(peer_namespace == "")", c));
  c.peer = &metadata;
  EXPECT_FALSE(event_holds(R"(peer_network == "internet")", c));
  EXPECT_TRUE(event_holds(R"(peer_network in ["metadata", "private"])", c));
  Peer node;
  node.kind = PeerKind::kNode;
  node.name = "node-1";
  c.peer = &node;  // a node's name is not a pod's nor a service's
  for (const char* p : {R"(peer_pod == "node-1")", R"(peer_service == "node-1")",
                        R"(peer_namespace == "")", R"(peer_network == "")"}) {
    EXPECT_FALSE(event_holds(p, c)) << p;
  }
}

// No peer (the agent has no index): every peer predicate is false, its negation true, as for a
// host process's pod attributes.
TEST(RulesPeer, WithoutAPeerEveryPeerPredicateIsFalse) {
  const Conn c;
  for (const char* p :
       {R"(peer_kind == "external")", R"(peer_kind in ["pod", "service", "node", "host"])",
        R"(peer_namespace == "shop")", R"(peer_pod == "x")", R"(peer_workload == "x")",
        R"(peer_service == "x")", R"(peer_network == "internet")", R"(peer_label["app"] == "x")",
        R"(peer_namespace == "")"}) {
    EXPECT_FALSE(event_holds(p, c)) << p;
    EXPECT_TRUE(event_holds(std::string("NOT ") + p, c)) << p;
  }
}

// The examples of docs/rules.md.
TEST(RulesPeer, DocumentedExamples) {
  PodMeta shop_pod;
  shop_pod.namespace_name = "shop";
  shop_pod.name = "web-1";
  PodMeta other_pod = shop_pod;
  other_pod.namespace_name = "payments";
  const Peer in_shop = [] {
    Peer p = peer_pod();
    p.namespace_name = "shop";
    return p;
  }();
  const Peer outside = peer_pod();  // payments
  const Peer service = peer_service();
  const Peer internet = peer_external("internet");
  const Peer private_net = peer_external("private");

  const std::string scope = R"(namespace == "shop")";
  const std::string leaves = R"(peer_kind == "pod" AND NOT peer_namespace == "shop")";
  auto leaves_shop = [&](const PodMeta* pod, const Peer* peer) {
    Conn c;
    c.pod = pod;
    c.peer = peer;
    return holds(scope, leaves, c);
  };
  EXPECT_TRUE(leaves_shop(&shop_pod, &outside));
  EXPECT_FALSE(leaves_shop(&shop_pod, &in_shop));
  EXPECT_FALSE(leaves_shop(&shop_pod, &service));
  EXPECT_FALSE(leaves_shop(&shop_pod, &internet));
  EXPECT_FALSE(leaves_shop(&other_pod, &outside));
  EXPECT_FALSE(leaves_shop(nullptr, &outside));
  EXPECT_FALSE(leaves_shop(&shop_pod, nullptr));

  Conn c;
  c.peer = &internet;
  EXPECT_TRUE(event_holds(R"(peer_network == "internet")", c));
  c.peer = &private_net;
  EXPECT_FALSE(event_holds(R"(peer_network == "internet")", c));
  c.peer = &service;
  EXPECT_FALSE(event_holds(R"(peer_network == "internet")", c));

  const std::string db =
      R"(peer_namespace == "payments" AND (peer_service == "db" OR peer_label["app"] == "db"))";
  Peer db_service = peer_service();
  db_service.namespace_name = "payments";
  db_service.name = "db";
  c.peer = &db_service;
  EXPECT_TRUE(event_holds(db, c));
  c.peer = &outside;  // payments/db-0, label app=db
  EXPECT_TRUE(event_holds(db, c));
  c.peer = &service;  // shop/web
  EXPECT_FALSE(event_holds(db, c));
}

TEST(RulesPeer, Errors) {
  EXPECT_EQ(event_error(R"(peer_kind == "Pod")"),
            "egress rule 'r' event, column 14: peer_kind needs one of \"pod\", \"service\", "
            "\"node\", \"host\", \"external\", got 'Pod'");
  EXPECT_EQ(event_error(R"(peer_kind in ["pod", "internet"])"),
            "egress rule 'r' event, column 22: peer_kind needs one of \"pod\", \"service\", "
            "\"node\", \"host\", \"external\", got 'internet'");
  EXPECT_EQ(event_error("peer_kind == 1"),
            "egress rule 'r' event, column 14: peer_kind needs one of \"pod\", \"service\", "
            "\"node\", \"host\", \"external\", got number 1");
  EXPECT_EQ(event_error("peer_kind in kinds", {{"kinds", {"pod", "cluster"}}}),
            "egress rule 'r' event, column 14: list 'kinds' item 2: peer_kind needs one of "
            "\"pod\", \"service\", \"node\", \"host\", \"external\", got 'cluster'");
  EXPECT_EQ(event_error(R"(peer_label == "x")"),
            "egress rule 'r' event, column 12: peer_label needs a key: peer_label[\"app\"], got "
            "'=='");
  EXPECT_EQ(event_error("peer_label[app] == \"x\""),
            "egress rule 'r' event, column 12: peer_label needs a double-quoted key, got 'app'");
  EXPECT_EQ(event_error(R"(peer_pod["a"] == "x")"),
            "egress rule 'r' event, column 9: attribute 'peer_pod' takes no key");
  EXPECT_EQ(event_error("peer_namespace == 3"),
            "egress rule 'r' event, column 19: peer_namespace needs a double-quoted string, got "
            "number 3");
  EXPECT_EQ(event_error("peer_cluster == \"x\""),
            "egress rule 'r' event, column 1: unknown attribute 'peer_cluster'");
  for (const char* p : {R"(peer_kind == "pod")", R"(peer_namespace == "x")", R"(peer_pod == "x")",
                        R"(peer_workload == "x")", R"(peer_service == "x")",
                        R"(peer_network == "x")", R"(peer_label["a"] == "x")"}) {
    EXPECT_NE(scope_error(p).find("belongs in event, not in scope"), std::string::npos) << p;
  }
  // A macro may not take a peer attribute's name.
  RulesSpec spec = one_rule("", "");
  spec.macros = {{"peer_pod", "port_dst == 1"}};
  EXPECT_EQ(error_of(spec), "macro 'peer_pod': the name is an attribute's");
}

// ---- the reference's example ------------------------------------------------------------------

RulesSpec reference_example() {
  RulesSpec spec;
  spec.egress.enabled = true;
  spec.egress.rules.push_back(
      {"NetMonIpv4Test", "",
       R"(ipv4_dst == "127.0.0.1" AND ipv4_src == "127.0.0.1" AND port_dst == 7878)", 4});
  spec.egress.rules.push_back(
      {"tcp-connections-out-of-cluster", "",
       R"(NOT ipv4_dst in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"])", 6});
  spec.ingress.enabled = true;
  spec.ingress.rules.push_back({"NetMonIpv6Test", R"(binary_name == "nc.openbsd")",
                                R"(ipv6_dst == "::1" AND port_dst == 7879)", 11});
  return spec;
}

TEST(RulesReferenceExample, Egress) {
  const auto compiled = compile_rules(reference_example());
  ASSERT_TRUE(compiled) << compiled.error().message;
  const RuleSet& egress = compiled->egress;
  ASSERT_TRUE(egress.enabled());
  ASSERT_TRUE(egress.has_rules());
  auto match = [&](const Conn& c) { return egress.match(c.input()); };
  const IpAddress lo = v4(127, 0, 0, 1);

  EXPECT_EQ(match(conn_v4(lo, lo, 7878)), "NetMonIpv4Test");
  // Loopback is not in the private ranges: out of cluster.
  EXPECT_EQ(match(conn_v4(lo, lo, 7879)), "tcp-connections-out-of-cluster");
  EXPECT_EQ(match(conn_v4(v4(127, 0, 0, 2), lo, 7878)), "tcp-connections-out-of-cluster");
  EXPECT_EQ(match(conn_v4(v4(10, 1, 2, 3), v4(8, 8, 8, 8), 53)), "tcp-connections-out-of-cluster");
  EXPECT_EQ(match(conn_v4(v4(10, 1, 2, 3), v4(172, 32, 0, 1), 443)),
            "tcp-connections-out-of-cluster");
  // In-cluster destinations: no rule, not reported.
  EXPECT_EQ(match(conn_v4(v4(10, 1, 2, 3), v4(10, 0, 0, 5), 443)), std::nullopt);
  EXPECT_EQ(match(conn_v4(v4(10, 1, 2, 3), v4(172, 31, 255, 255), 443)), std::nullopt);
  EXPECT_EQ(match(conn_v4(v4(10, 1, 2, 3), v4(192, 168, 0, 1), 443)), std::nullopt);
  // IPv4-mapped: the same as IPv4.
  EXPECT_EQ(match(conn_v6("::ffff:127.0.0.1", "::ffff:127.0.0.1", 7878)), "NetMonIpv4Test");
  EXPECT_EQ(match(conn_v6("::ffff:10.1.2.3", "::ffff:10.0.0.5", 443)), std::nullopt);
  // IPv6: ipv4_dst is false, so NOT ipv4_dst in [...] holds (the reference's semantics).
  EXPECT_EQ(match(conn_v6("::1", "::1", 7878)), "tcp-connections-out-of-cluster");
}

TEST(RulesReferenceExample, Ingress) {
  const auto compiled = compile_rules(reference_example());
  ASSERT_TRUE(compiled) << compiled.error().message;
  const RuleSet& ingress = compiled->ingress;
  ASSERT_TRUE(ingress.has_rules());
  Conn c = conn_v6("::1", "::1", 7879);
  c.binary_path = "/usr/bin/nc.openbsd";
  EXPECT_EQ(ingress.match(c.input()), "NetMonIpv6Test");
  c.dport = 7878;
  EXPECT_EQ(ingress.match(c.input()), std::nullopt);
  c.dport = 7879;
  c.daddr = v6("::2");
  EXPECT_EQ(ingress.match(c.input()), std::nullopt);
  c.daddr = v6("::1");
  c.binary_path = "/usr/bin/nc.traditional";
  EXPECT_EQ(ingress.match(c.input()), std::nullopt);
  c.binary_path = "/usr/bin/nc.openbsd";
  const Conn v4c = [&] {
    Conn x = conn_v4(v4(127, 0, 0, 1), v4(127, 0, 0, 1), 7879);
    x.binary_path = c.binary_path;
    return x;
  }();
  EXPECT_EQ(ingress.match(v4c.input()), std::nullopt);
  EXPECT_EQ(ingress.match(c.input()), "NetMonIpv6Test");
}

// ---- allocation ------------------------------------------------------------------------------

// Only in the plain binary: the sanitizers replace operator new themselves, so the ASan binary
// has no counting operator new and leaves this test out (a skip would fail under CI=true).
#if NETMON_RULES_COUNT_NEW
TEST(RulesAllocation, MatchDoesNotAllocate) {
  RulesSpec spec = reference_example();
  spec.lists = {{"private", {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}},
                {"private6", {"fd00::/8"}}};
  spec.macros = {{"k8s_web", "namespace == \"shop\" AND pod_label[\"app\"] in [\"web\", \"api\"]"}};
  spec.egress.rules.insert(
      spec.egress.rules.begin(),
      {"k8s",
       "k8s_web AND container == \"nginx\" AND uid in [0, 1000] AND binary_prefix == \"/usr\"",
       "ipv6_dst in private6 OR ipv4_dst in private AND port_dst in [80, 443]"});
  spec.egress.rules.insert(spec.egress.rules.begin() + 1,
                           {"to-db", "",
                            R"(peer_kind in ["pod", "service"] AND peer_namespace == "payments" )"
                            R"(AND peer_label["app"] == "db" AND NOT peer_network == "internet")"});
  const auto compiled = compile_rules(spec);
  ASSERT_TRUE(compiled) << compiled.error().message;
  const PodMeta pod = fake_pod();
  Conn in_pod = conn_v4(v4(10, 0, 0, 1), v4(10, 0, 0, 2), 443);
  in_pod.pod = &pod;
  in_pod.container = &pod.containers[0];
  const Conn host = conn_v6("2001:db8::1", "2001:db8::2", 22);
  const Conn lo = conn_v4(v4(127, 0, 0, 1), v4(127, 0, 0, 1), 7878);
  const Peer peer = peer_pod();
  Conn to_peer = host;
  to_peer.peer = &peer;
  const RuleInput inputs[] = {in_pod.input(), host.input(), lo.input(), to_peer.input()};

  size_t hits = 0;
  const uint64_t before = g_new_calls;
  for (int round = 0; round < 100; ++round) {
    for (const RuleInput& in : inputs) {
      hits += compiled->egress.match(in).has_value();
      hits += compiled->ingress.match(in).has_value();
    }
  }
  const uint64_t after = g_new_calls;
  EXPECT_EQ(after - before, 0u);
  EXPECT_EQ(hits, 400u);  // all four match an egress rule, none the ingress one
  EXPECT_EQ(compiled->egress.match(in_pod.input()), "k8s");
  EXPECT_EQ(compiled->egress.match(to_peer.input()), "to-db");

  // The counter works.
  const uint64_t probe = g_new_calls;
  auto* p = new std::string(100, 'x');
  EXPECT_GT(g_new_calls, probe);
  delete p;
}
#endif

}  // namespace
}  // namespace netmon
