// Verdicts: the event switches, the rules, and the memory that gives a Close its open event's
// rule (and filters the Close of a connection whose open event was filtered).
#include "rules/verdicts.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace netmon {
namespace {

ConnectionEvent event(ConnKind kind, uint64_t cookie, uint16_t dport) {
  ConnectionEvent e;
  e.kind = kind;
  e.direction = kind == ConnKind::kAccept ? Direction::kInbound : Direction::kOutbound;
  e.owner_known = true;
  e.task.uid = 1000;
  e.cookie = cookie;
  e.saddr.family = IpAddress::Family::kV4;
  e.daddr.family = IpAddress::Family::kV4;
  e.sport = kind == ConnKind::kAccept ? 8080 : 40000;
  e.dport = dport;
  return e;
}

CompiledRules compiled(const RulesSpec& spec) {
  auto rules = compile_rules(spec);
  EXPECT_TRUE(rules.has_value()) << (rules ? "" : rules.error().message);
  return rules ? std::move(*rules) : CompiledRules{};
}

// Egress rule "web" for destination port 443; ingress: every event, unnamed.
RulesSpec web_rule() {
  RulesSpec spec;
  spec.egress.rules.push_back(RuleSpec{"web", "", "port_dst == 443", 0});
  return spec;
}

struct Decision {
  bool written;
  std::string rule;
};

Decision decide(Verdicts& v, const ConnectionEvent& e, const EventOwner& owner = {}) {
  std::string_view rule;
  const bool written = v.decide(e, owner, rule);
  return {written, std::string(rule)};
}

TEST(VerdictsTest, WithoutRulesOnlyTheSwitchesDecideAndNothingIsRemembered) {
  EventSwitches switches;
  switches.accept = false;
  Verdicts v(nullptr, switches, 16);
  EXPECT_TRUE(decide(v, event(ConnKind::kEstablish, 1, 443)).written);
  EXPECT_FALSE(decide(v, event(ConnKind::kAccept, 2, 80)).written);
  EXPECT_TRUE(decide(v, event(ConnKind::kClose, 1, 443)).written);
  EXPECT_TRUE(decide(v, event(ConnKind::kClose, 3, 443)).written);  // never seen open
  EXPECT_TRUE(decide(v, event(ConnKind::kFailed, 4, 443)).written);
  EXPECT_EQ(decide(v, event(ConnKind::kEstablish, 1, 443)).rule, "");
  EXPECT_EQ(v.tracked(), 0u);
}

TEST(VerdictsTest, TheCloseCarriesItsOpenEventsRule) {
  const CompiledRules rules = compiled(web_rule());
  Verdicts v(&rules, {}, 16);
  const Decision open = decide(v, event(ConnKind::kEstablish, 7, 443));
  EXPECT_TRUE(open.written);
  EXPECT_EQ(open.rule, "web");
  EXPECT_EQ(v.tracked(), 1u);
  const Decision close = decide(v, event(ConnKind::kClose, 7, 0));
  EXPECT_TRUE(close.written);
  EXPECT_EQ(close.rule, "web");
  EXPECT_EQ(v.tracked(), 0u);
  // Forgotten once closed: a second Close of the same cookie was never open.
  EXPECT_FALSE(decide(v, event(ConnKind::kClose, 7, 0)).written);
}

TEST(VerdictsTest, TheCloseOfAFilteredConnectionIsFiltered) {
  const CompiledRules rules = compiled(web_rule());
  Verdicts v(&rules, {}, 16);
  EXPECT_FALSE(decide(v, event(ConnKind::kEstablish, 8, 80)).written);
  EXPECT_FALSE(decide(v, event(ConnKind::kClose, 8, 0)).written);
  // An ingress direction without rules: written without a name, and its Close too.
  const Decision accept = decide(v, event(ConnKind::kAccept, 9, 50000));
  EXPECT_TRUE(accept.written);
  EXPECT_EQ(accept.rule, "");
  EXPECT_TRUE(decide(v, event(ConnKind::kClose, 9, 0)).written);
}

TEST(VerdictsTest, FailedConnectionsAreNotRemembered) {
  const CompiledRules rules = compiled(web_rule());
  Verdicts v(&rules, {}, 16);
  const Decision failed = decide(v, event(ConnKind::kFailed, 10, 443));
  EXPECT_TRUE(failed.written);
  EXPECT_EQ(failed.rule, "web");
  EXPECT_EQ(v.tracked(), 0u);
}

TEST(VerdictsTest, ASwitchedOffTypeIsStillRememberedForItsClose) {
  const CompiledRules rules = compiled(web_rule());
  EventSwitches switches;
  switches.establish = false;
  Verdicts v(&rules, switches, 16);
  EXPECT_FALSE(decide(v, event(ConnKind::kEstablish, 11, 443)).written);
  const Decision close = decide(v, event(ConnKind::kClose, 11, 0));
  EXPECT_TRUE(close.written);
  EXPECT_EQ(close.rule, "web");
}

TEST(VerdictsTest, ADisabledDirectionWritesNothing) {
  RulesSpec spec;
  spec.ingress.enabled = false;
  const CompiledRules rules = compiled(spec);
  Verdicts v(&rules, {}, 16);
  EXPECT_FALSE(decide(v, event(ConnKind::kAccept, 12, 50000)).written);
  EXPECT_FALSE(decide(v, event(ConnKind::kClose, 12, 0)).written);
  EXPECT_TRUE(decide(v, event(ConnKind::kEstablish, 13, 80)).written);
}

TEST(VerdictsTest, ConnectionsBeyondTheLimitAreCountedAndTheirCloseFiltered) {
  const CompiledRules rules = compiled(web_rule());
  Verdicts v(&rules, {}, 2);
  for (uint64_t cookie = 1; cookie <= 3; ++cookie) {
    EXPECT_TRUE(decide(v, event(ConnKind::kEstablish, cookie, 443)).written);
  }
  EXPECT_EQ(v.tracked(), 2u);
  EXPECT_EQ(v.stats().rule_tracking_full, 1u);
  EXPECT_TRUE(decide(v, event(ConnKind::kClose, 2, 0)).written);
  EXPECT_FALSE(decide(v, event(ConnKind::kClose, 3, 0)).written);
}

TEST(VerdictsTest, WithoutACookieTheKeyIsThePortsAndDirection) {
  const CompiledRules rules = compiled(web_rule());
  Verdicts v(&rules, {}, 16);
  ConnectionEvent open = event(ConnKind::kEstablish, 0, 443);
  EXPECT_TRUE(decide(v, open).written);
  ConnectionEvent other_port = event(ConnKind::kClose, 0, 444);
  EXPECT_FALSE(decide(v, other_port).written);
  ConnectionEvent close = event(ConnKind::kClose, 0, 443);
  EXPECT_EQ(decide(v, close).rule, "web");
}

TEST(VerdictsTest, TheOwnerIsWhatScopesSee) {
  RulesSpec spec;
  spec.egress.rules.push_back(RuleSpec{"curl", R"(binary_path == "/usr/bin/curl")", "", 0});
  const CompiledRules rules = compiled(spec);
  Verdicts v(&rules, {}, 16);
  EventOwner curl;
  curl.binary_path = "/usr/bin/curl";
  EXPECT_EQ(decide(v, event(ConnKind::kEstablish, 20, 80), curl).rule, "curl");
  EXPECT_FALSE(decide(v, event(ConnKind::kEstablish, 21, 80)).written);
}

// The peer is the remote end whatever the direction: for an accepted connection, the client
// (while port_dst is this host's port: rules speak of who sent the SYN to whom).
TEST(VerdictsTest, RulesSeeThePeerOfEitherDirection) {
  RulesSpec spec;
  spec.egress.rules.push_back(RuleSpec{"to-internet", "", R"(peer_network == "internet")", 0});
  spec.ingress.rules.push_back(
      RuleSpec{"from-shop", "", R"(peer_namespace == "shop" AND port_dst == 8080)", 0});
  const CompiledRules rules = compiled(spec);
  Verdicts v(&rules, {}, 16);
  Peer internet;
  internet.kind = PeerKind::kExternal;
  internet.network = "internet";
  Peer client;
  client.kind = PeerKind::kPod;
  client.namespace_name = "shop";
  client.name = "web-1";
  EventOwner owner;
  owner.peer = &internet;
  EXPECT_EQ(decide(v, event(ConnKind::kEstablish, 1, 443), owner).rule, "to-internet");
  EXPECT_FALSE(decide(v, event(ConnKind::kEstablish, 2, 443)).written);  // no peer
  owner.peer = &client;
  EXPECT_FALSE(decide(v, event(ConnKind::kEstablish, 3, 443), owner).written);
  const Decision in = decide(v, event(ConnKind::kAccept, 4, 41000), owner);
  EXPECT_TRUE(in.written);
  EXPECT_EQ(in.rule, "from-shop");
  owner.peer = &internet;
  EXPECT_FALSE(decide(v, event(ConnKind::kAccept, 5, 41000), owner).written);
}

}  // namespace
}  // namespace netmon
