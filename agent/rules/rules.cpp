// The rule language: lexer, recursive-descent parser and compiler into a flat, allocation-free
// evaluation form.
//
// Grammar (keywords are case-insensitive: AND/and, OR/or, NOT/not, in/IN):
//
//   expr      := or
//   or        := and ( OR and )*
//   and       := not ( AND not )*
//   not       := NOT not | primary
//   primary   := '(' or ')' | predicate | MACRO
//   predicate := ATTRIBUTE [ '[' STRING ']' ] ( '==' value | in ( '[' [ item (',' item)* ] ']' |
//                LIST ) )
//   value     := STRING | NUMBER
//   item      := value | LIST
//
// Semantics, beyond the obvious:
// - Logic is two-valued. A predicate over something unknown (no pod for a host process, no
//   container, an unknown uid, an empty binary path, an absent label, a connection of the other
//   address family) is false, so its negation is true: for a host process
//   `NOT namespace == "x"` holds. This is what makes the reference's
//   `NOT ipv4_dst in [private ranges]` hold for every IPv6 connection.
// - A connection whose address is IPv4-mapped IPv6 (::ffff:a.b.c.d) counts as IPv4: ipv4_*
//   attributes see a.b.c.d and ipv6_* attributes are false for it. An ipv6_* value that lies
//   entirely inside ::ffff:0:0/96 could therefore never match and is an error.
// - An address compared with a CIDR string is a prefix match (host bits beyond the prefix are
//   ignored, as Go's net.ParseCIDR does); with a plain address, an exact match.
// - binary_name is the last component of binary_path; binary_prefix is a prefix match on
//   binary_path; container is the container's name (and needs a pod, like every Kubernetes
//   attribute).
// - Scope predicates see the process and pod, event predicates the connection's addresses,
//   ports and peer; an attribute used in the other one is an error.
// - peer_* attributes describe the connection's remote end (the record's daddr, whatever the
//   direction: for an accepted connection, the client), as the event's `peer` object does. A
//   field the peer does not have (no peer index, a kind without that field, an empty value such
//   as the workload of a pod only an EndpointSlice names) is unknown, like a host process's pod:
//   peer_namespace is a pod's or a service's namespace, peer_pod and peer_workload a pod's,
//   peer_service a service's name, peer_network an external peer's network, peer_label a pod's
//   label. peer_kind's values must be one of the five kinds. When the node translated the
//   connection to a backend pod (peer.backend, issue #20), peer_pod, peer_workload and peer_label
//   are that pod's: a connection to service cart that landed on pod cart-7f9c has peer_service
//   "cart" and peer_workload "cart"; peer_kind, peer_namespace and peer_service stay the dialed
//   peer's.
// - Macros are expanded at compile time (each macro compiled once per scope/event use and
//   shared as a sub-DAG); cycles are errors. A list may be named by `in NAME` or inside a list
//   literal, where its values are spliced in.
// - Columns in messages are 1-based byte offsets into the expression text.
#include "rules/rules.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_map>
#include <utility>

#include "common/text.h"

namespace netmon {
namespace rules_internal {

enum class Attr : uint8_t {
  kIpv4Src,
  kIpv4Dst,
  kIpv6Src,
  kIpv6Dst,
  kPortSrc,
  kPortDst,
  kBinaryPath,
  kBinaryName,
  kBinaryPrefix,
  kParentBinaryPath,
  kUid,
  kNamespace,
  kPod,
  kContainer,
  kWorkload,
  kWorkloadKind,
  kPodLabel,
  kPeerKind,
  kPeerNamespace,
  kPeerPod,
  kPeerWorkload,
  kPeerService,
  kPeerNetwork,
  kPeerLabel,
};

// kPeerKind: a PeerKind in Value::number.
enum class Kind : uint8_t { kIpv4, kIpv6, kPort, kUid, kString, kPeerKind };
enum class Where : uint8_t { kScope, kEvent, kAny };

struct AttrInfo {
  std::string_view name;
  Attr attr;
  Kind kind;
  Where where;
};

constexpr AttrInfo kAttrs[] = {
    {"ipv4_src", Attr::kIpv4Src, Kind::kIpv4, Where::kEvent},
    {"ipv4_dst", Attr::kIpv4Dst, Kind::kIpv4, Where::kEvent},
    {"ipv6_src", Attr::kIpv6Src, Kind::kIpv6, Where::kEvent},
    {"ipv6_dst", Attr::kIpv6Dst, Kind::kIpv6, Where::kEvent},
    {"port_src", Attr::kPortSrc, Kind::kPort, Where::kEvent},
    {"port_dst", Attr::kPortDst, Kind::kPort, Where::kEvent},
    {"binary_path", Attr::kBinaryPath, Kind::kString, Where::kScope},
    {"binary_name", Attr::kBinaryName, Kind::kString, Where::kScope},
    {"binary_prefix", Attr::kBinaryPrefix, Kind::kString, Where::kScope},
    {"parent_binary_path", Attr::kParentBinaryPath, Kind::kString, Where::kScope},
    {"uid", Attr::kUid, Kind::kUid, Where::kScope},
    {"namespace", Attr::kNamespace, Kind::kString, Where::kScope},
    {"pod", Attr::kPod, Kind::kString, Where::kScope},
    {"container", Attr::kContainer, Kind::kString, Where::kScope},
    {"workload", Attr::kWorkload, Kind::kString, Where::kScope},
    {"workload_kind", Attr::kWorkloadKind, Kind::kString, Where::kScope},
    {"pod_label", Attr::kPodLabel, Kind::kString, Where::kScope},
    {"peer_kind", Attr::kPeerKind, Kind::kPeerKind, Where::kEvent},
    {"peer_namespace", Attr::kPeerNamespace, Kind::kString, Where::kEvent},
    {"peer_pod", Attr::kPeerPod, Kind::kString, Where::kEvent},
    {"peer_workload", Attr::kPeerWorkload, Kind::kString, Where::kEvent},
    {"peer_service", Attr::kPeerService, Kind::kString, Where::kEvent},
    {"peer_network", Attr::kPeerNetwork, Kind::kString, Where::kEvent},
    {"peer_label", Attr::kPeerLabel, Kind::kString, Where::kEvent},
};

// Attributes written attr["key"].
constexpr bool has_key(Attr attr) { return attr == Attr::kPodLabel || attr == Attr::kPeerLabel; }

constexpr PeerKind kRulePeerKinds[] = {PeerKind::kPod, PeerKind::kService, PeerKind::kNode,
                                       PeerKind::kHost, PeerKind::kExternal};

enum class Op : uint8_t { kAnd, kOr, kNot, kPred };

// AND/OR: children[a, a + b); NOT: child a; kPred: preds[a].
struct Node {
  Op op;
  uint32_t a;
  uint32_t b;
};

// One compared-with value; which fields count depends on the attribute's kind.
struct Value {
  std::array<uint8_t, 16> bytes{};  // kIpv4 (first 4 bytes, masked), kIpv6 (masked)
  uint32_t number = 0;              // kPort, kUid; kIpv4/kIpv6: prefix length
  uint32_t str_off = 0;             // kString: strings[str_off, str_off + str_len)
  uint32_t str_len = 0;
};

// `attr == v` is `attr in [v]`: values[first, first + count).
struct Pred {
  Attr attr;
  uint32_t first = 0;
  uint32_t count = 0;
  uint32_t key_off = 0;  // pod_label's and peer_label's key in strings
  uint32_t key_len = 0;
};

constexpr uint32_t kAlways = std::numeric_limits<uint32_t>::max();

}  // namespace rules_internal

using namespace rules_internal;

struct RuleSet::Impl {
  struct Rule {
    uint32_t scope = kAlways;  // root node, or kAlways for an empty predicate
    uint32_t event = kAlways;
  };

  bool enabled = true;
  std::vector<std::string> names;
  std::vector<Rule> rules;
  std::vector<Node> nodes;
  std::vector<uint32_t> children;
  std::vector<Pred> preds;
  std::vector<Value> values;
  std::string strings;  // every string value and label key, each stored once

  std::string_view str(uint32_t off, uint32_t len) const {
    return std::string_view(strings).substr(off, len);
  }
  bool holds(uint32_t root, const RuleInput& in) const { return root == kAlways || eval(root, in); }
  bool eval(uint32_t node, const RuleInput& in) const;
  bool test(const Pred& pred, const RuleInput& in) const;
};

namespace {

// ---- evaluation ------------------------------------------------------------------------------

bool is_v4_mapped(const std::array<uint8_t, 16>& b) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(b.data(), kPrefix, sizeof kPrefix) == 0;
}

// The 4 bytes of an IPv4 (or IPv4-mapped IPv6) address; null otherwise.
const uint8_t* v4_bytes(const IpAddress* a) {
  if (a == nullptr) return nullptr;
  if (a->family == IpAddress::Family::kV4) return a->bytes.data();
  if (is_v4_mapped(a->bytes)) return a->bytes.data() + 12;
  return nullptr;
}

// The 16 bytes of a genuine (not IPv4-mapped) IPv6 address; null otherwise.
const uint8_t* v6_bytes(const IpAddress* a) {
  if (a == nullptr || a->family != IpAddress::Family::kV6 || is_v4_mapped(a->bytes)) {
    return nullptr;
  }
  return a->bytes.data();
}

// `net` is already masked to `prefix` bits.
bool prefix_match(const uint8_t* addr, const uint8_t* net, uint32_t prefix) {
  const uint32_t full = prefix / 8;
  if (std::memcmp(addr, net, full) != 0) return false;
  const uint32_t rest = prefix % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<uint8_t>(0xffu << (8 - rest));
  return (addr[full] & mask) == net[full];
}

// A peer attribute's string; nullopt when unknown (no peer, a field its kind lacks, or empty).
std::optional<std::string_view> peer_string_of(Attr attr, std::string_view key, const Peer* peer,
                                               const Peer* backend) {
  if (peer == nullptr) return std::nullopt;
  // The pod the connection reached, when the node translated it to one.
  if (backend != nullptr && backend->kind == PeerKind::kPod &&
      (attr == Attr::kPeerPod || attr == Attr::kPeerWorkload || attr == Attr::kPeerLabel)) {
    peer = backend;
  }
  std::string_view s;
  switch (attr) {
    case Attr::kPeerNamespace:
      if (peer->kind == PeerKind::kPod || peer->kind == PeerKind::kService) {
        s = peer->namespace_name;
      }
      break;
    case Attr::kPeerPod:
      if (peer->kind == PeerKind::kPod) s = peer->name;
      break;
    case Attr::kPeerWorkload:
      if (peer->kind == PeerKind::kPod) s = peer->workload;
      break;
    case Attr::kPeerService:
      if (peer->kind == PeerKind::kService) s = peer->name;
      break;
    case Attr::kPeerNetwork:
      if (peer->kind == PeerKind::kExternal) s = peer->network;
      break;
    case Attr::kPeerLabel:
      if (peer->kind != PeerKind::kPod) break;
      for (const PeerLabel& label : peer->labels) {  // few labels: linear
        if (label.key == key) return label.value;
      }
      break;
    default:
      break;
  }
  if (s.empty()) return std::nullopt;
  return s;
}

// The string an attribute has for this input; nullopt when unknown.
std::optional<std::string_view> string_of(Attr attr, std::string_view key, const RuleInput& in) {
  switch (attr) {
    case Attr::kPeerNamespace:
    case Attr::kPeerPod:
    case Attr::kPeerWorkload:
    case Attr::kPeerService:
    case Attr::kPeerNetwork:
    case Attr::kPeerLabel:
      return peer_string_of(attr, key, in.peer, in.backend);
    case Attr::kBinaryPath:
    case Attr::kBinaryPrefix:
      if (in.binary_path.empty()) return std::nullopt;
      return in.binary_path;
    case Attr::kBinaryName: {
      if (in.binary_path.empty()) return std::nullopt;
      const size_t slash = in.binary_path.rfind('/');
      return slash == std::string_view::npos ? in.binary_path : in.binary_path.substr(slash + 1);
    }
    case Attr::kParentBinaryPath:
      if (in.parent_binary_path.empty()) return std::nullopt;
      return in.parent_binary_path;
    default:
      break;
  }
  if (in.pod == nullptr) return std::nullopt;
  switch (attr) {
    case Attr::kNamespace:
      return in.pod->namespace_name;
    case Attr::kPod:
      return in.pod->name;
    case Attr::kWorkload:
      return in.pod->workload;
    case Attr::kWorkloadKind:
      return in.pod->workload_kind;
    case Attr::kContainer:
      if (in.container == nullptr) return std::nullopt;
      return in.container->name;
    case Attr::kPodLabel:
      // Linear: pods have few labels, and this does not depend on their order.
      for (const auto& [k, v] : in.pod->labels) {
        if (k == key) return std::string_view(v);
      }
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

}  // namespace

bool RuleSet::Impl::test(const Pred& pred, const RuleInput& in) const {
  const Value* begin = values.data() + pred.first;
  const Value* end = begin + pred.count;
  switch (pred.attr) {
    case Attr::kIpv4Src:
    case Attr::kIpv4Dst: {
      const uint8_t* a = v4_bytes(pred.attr == Attr::kIpv4Src ? in.saddr : in.daddr);
      if (a == nullptr) return false;
      return std::any_of(begin, end,
                         [&](const Value& v) { return prefix_match(a, v.bytes.data(), v.number); });
    }
    case Attr::kIpv6Src:
    case Attr::kIpv6Dst: {
      const uint8_t* a = v6_bytes(pred.attr == Attr::kIpv6Src ? in.saddr : in.daddr);
      if (a == nullptr) return false;
      return std::any_of(begin, end,
                         [&](const Value& v) { return prefix_match(a, v.bytes.data(), v.number); });
    }
    case Attr::kPortSrc:
    case Attr::kPortDst: {
      const uint32_t port = pred.attr == Attr::kPortSrc ? in.sport : in.dport;
      return std::any_of(begin, end, [&](const Value& v) { return v.number == port; });
    }
    case Attr::kPeerKind:
      if (in.peer == nullptr) return false;
      return std::any_of(begin, end, [&](const Value& v) {
        return v.number == static_cast<uint32_t>(in.peer->kind);
      });
    case Attr::kUid:
      if (!in.uid) return false;
      return std::any_of(begin, end, [&](const Value& v) { return v.number == *in.uid; });
    case Attr::kBinaryPrefix: {
      const auto s = string_of(pred.attr, {}, in);
      if (!s) return false;
      return std::any_of(begin, end,
                         [&](const Value& v) { return s->starts_with(str(v.str_off, v.str_len)); });
    }
    default: {
      const auto s = string_of(pred.attr, str(pred.key_off, pred.key_len), in);
      if (!s) return false;
      return std::any_of(begin, end,
                         [&](const Value& v) { return *s == str(v.str_off, v.str_len); });
    }
  }
}

bool RuleSet::Impl::eval(uint32_t node, const RuleInput& in) const {
  const Node& n = nodes[node];
  switch (n.op) {
    case Op::kAnd:
      for (uint32_t i = n.a; i < n.a + n.b; ++i) {
        if (!eval(children[i], in)) return false;
      }
      return true;
    case Op::kOr:
      for (uint32_t i = n.a; i < n.a + n.b; ++i) {
        if (eval(children[i], in)) return true;
      }
      return false;
    case Op::kNot:
      return !eval(n.a, in);
    case Op::kPred:
      return test(preds[n.a], in);
  }
  return false;
}

RuleSet::RuleSet() : impl_(std::make_unique<Impl>()) {}
RuleSet::~RuleSet() = default;
RuleSet::RuleSet(RuleSet&&) noexcept = default;
RuleSet& RuleSet::operator=(RuleSet&&) noexcept = default;

bool RuleSet::enabled() const { return impl_ == nullptr || impl_->enabled; }

bool RuleSet::has_rules() const { return impl_ != nullptr && !impl_->rules.empty(); }

std::optional<std::string_view> RuleSet::match(const RuleInput& input) const {
  if (impl_ == nullptr) return std::nullopt;
  for (size_t i = 0; i < impl_->rules.size(); ++i) {
    const Impl::Rule& rule = impl_->rules[i];
    if (impl_->holds(rule.scope, input) && impl_->holds(rule.event, input)) {
      return std::string_view(impl_->names[i]);
    }
  }
  return std::nullopt;
}

// ---- compilation -----------------------------------------------------------------------------

namespace {

constexpr int kMaxDepth = 64;              // nesting of parentheses, NOT and macros
constexpr uint64_t kMaxExpanded = 100000;  // predicates and operators after macro expansion

// Thrown inside this file only; compile_rules turns it into a Result.
struct CompileError {
  size_t column;  // 1-based; 0: none
  std::string message;
};

[[noreturn]] void throw_at(size_t pos, std::string message) {
  throw CompileError{pos + 1, std::move(message)};
}

bool ieq(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x >= 'A' && x <= 'Z' ? x - 'A' + 'a' : x) == y;
         });
}

bool is_ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_ident_char(char c) { return is_ident_start(c) || is_digit(c) || c == '-'; }

const AttrInfo* find_attr(std::string_view name) {
  for (const AttrInfo& a : kAttrs) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

// Input in messages goes through netmon::quoted() (common/text.h): escaped and capped, so that a
// 10 MB rule makes a message of a few hundred bytes. A number or macro name is shown as it is
// when short (the lexer has checked its characters), else quoted and capped.
std::string shown(std::string_view s) {
  return s.size() <= 40 ? std::string(s) : netmon::quoted(s);
}

// ---- lexer -----------------------------------------------------------------------------------

enum class Tok : uint8_t {
  kEnd,
  kLParen,
  kRParen,
  kLBracket,
  kRBracket,
  kComma,
  kEq,
  kAnd,
  kOr,
  kNot,
  kIn,
  kIdent,
  kString,
  kNumber,
};

struct Token {
  Tok type = Tok::kEnd;
  size_t pos = 0;    // byte offset in the expression
  std::string text;  // identifier, decoded string, digits
};

std::string describe(const Token& t) {
  switch (t.type) {
    case Tok::kEnd:
      return "end of expression";
    case Tok::kLParen:
      return "'('";
    case Tok::kRParen:
      return "')'";
    case Tok::kLBracket:
      return "'['";
    case Tok::kRBracket:
      return "']'";
    case Tok::kComma:
      return "','";
    case Tok::kEq:
      return "'=='";
    case Tok::kAnd:
    case Tok::kOr:
    case Tok::kNot:
    case Tok::kIn:
      return t.text;
    case Tok::kIdent:
      return netmon::quoted(t.text);
    case Tok::kString:
      return "string " + netmon::quoted(t.text);
    case Tok::kNumber:
      return "number " + shown(t.text);
  }
  return "?";
}

std::vector<Token> lex(std::string_view s) {
  std::vector<Token> out;
  size_t i = 0;
  for (;;) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
    Token t;
    t.pos = i;
    if (i == s.size()) {
      out.push_back(std::move(t));
      return out;
    }
    const char c = s[i];
    auto single = [&](Tok type) {
      t.type = type;
      ++i;
    };
    switch (c) {
      case '(':
        single(Tok::kLParen);
        break;
      case ')':
        single(Tok::kRParen);
        break;
      case '[':
        single(Tok::kLBracket);
        break;
      case ']':
        single(Tok::kRBracket);
        break;
      case ',':
        single(Tok::kComma);
        break;
      case '=':
        if (i + 1 < s.size() && s[i + 1] == '=') {
          t.type = Tok::kEq;
          i += 2;
        } else {
          throw_at(i, "unexpected '=': comparison is '=='");
        }
        break;
      case '"': {
        t.type = Tok::kString;
        ++i;
        for (;;) {
          if (i >= s.size()) throw_at(t.pos, "unterminated string");
          const char d = s[i++];
          if (d == '"') break;
          if (d == '\\') {
            if (i >= s.size()) throw_at(t.pos, "unterminated string");
            const char e = s[i];
            if (e != '"' && e != '\\') {
              const std::string q = netmon::quoted(std::string_view(&s[i], 1));
              throw_at(i - 1, "unknown escape '\\" + q.substr(1, q.size() - 2) +
                                  "' in string (only \\\" and \\\\ are escapes)");
            }
            t.text += e;
            ++i;
          } else {
            t.text += d;
          }
        }
        break;
      }
      case '&':
      case '|':
      case '!': {
        const bool doubled = i + 1 < s.size() && s[i + 1] == c;
        if (c == '!' && i + 1 < s.size() && s[i + 1] == '=') {
          throw_at(i, "unexpected '!=': write NOT attribute == value");
        }
        const char* use = c == '&' ? "AND" : c == '|' ? "OR" : "NOT";
        throw_at(i, std::string("unexpected '") + c + (doubled ? std::string(1, c) : "") +
                        "': use " + use);
      }
      default:
        if (is_digit(c)) {
          size_t j = i;
          while (j < s.size() &&
                 (is_ident_char(s[j]) || s[j] == '.' || s[j] == ':' || s[j] == '/')) {
            ++j;
          }
          const std::string_view word = s.substr(i, j - i);
          if (!std::all_of(word.begin(), word.end(), is_digit)) {
            throw_at(i,
                     "unquoted value " + netmon::quoted(word) + ": only numbers may be unquoted");
          }
          t.type = Tok::kNumber;
          t.text = word;
          i = j;
        } else if (is_ident_start(c)) {
          size_t j = i;
          while (j < s.size() && is_ident_char(s[j])) ++j;
          t.text = s.substr(i, j - i);
          i = j;
          if (ieq(t.text, "and")) {
            t.type = Tok::kAnd;
          } else if (ieq(t.text, "or")) {
            t.type = Tok::kOr;
          } else if (ieq(t.text, "not")) {
            t.type = Tok::kNot;
          } else if (ieq(t.text, "in")) {
            t.type = Tok::kIn;
          } else {
            t.type = Tok::kIdent;
          }
        } else if (c == ':' || c == '.') {
          throw_at(i, "unexpected character '" + std::string(1, c) +
                          "': addresses must be double-quoted");
        } else {
          const std::string q = netmon::quoted(std::string_view(&s[i], 1));
          throw_at(i, "unexpected character '" + q.substr(1, q.size() - 2) + "'");
        }
    }
    out.push_back(std::move(t));
  }
}

// ---- values ----------------------------------------------------------------------------------

// Digits only, no sign, no spaces; nullopt otherwise. Saturates at UINT64_MAX.
std::optional<uint64_t> parse_unsigned(std::string_view s) {
  if (s.empty() || !std::all_of(s.begin(), s.end(), is_digit)) return std::nullopt;
  uint64_t v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) return std::numeric_limits<uint64_t>::max();
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

struct Network {
  bool v6 = false;
  std::array<uint8_t, 16> bytes{};
  uint32_t prefix = 0;
};

// "10.0.0.1", "10.0.0.0/8", "::1", "fd00::/8". Throws a message (column filled in by the caller).
Network parse_network(std::string_view text) {
  Network n;
  const size_t slash = text.find('/');
  const std::string addr(text.substr(0, slash));
  if (addr.find('\0') != std::string::npos) {
    throw CompileError{0, "invalid address or CIDR " + netmon::quoted(text)};
  }
  if (inet_pton(AF_INET, addr.c_str(), n.bytes.data()) == 1) {
    n.v6 = false;
  } else if (inet_pton(AF_INET6, addr.c_str(), n.bytes.data()) == 1) {
    n.v6 = true;
  } else {
    throw CompileError{0, "invalid address or CIDR " + netmon::quoted(text)};
  }
  const uint32_t max = n.v6 ? 128 : 32;
  n.prefix = max;
  if (slash != std::string_view::npos) {
    const std::string_view p = text.substr(slash + 1);
    const auto len = p.size() <= 3 ? parse_unsigned(p) : std::nullopt;
    if (!len) {
      throw CompileError{0, "invalid CIDR prefix length in " + netmon::quoted(text)};
    }
    if (*len > max) {
      throw CompileError{0, "CIDR prefix length " + std::to_string(*len) + " in " +
                                netmon::quoted(text) + " is out of range for " +
                                (n.v6 ? "IPv6" : "IPv4") + " (0-" + std::to_string(max) + ")"};
    }
    n.prefix = static_cast<uint32_t>(*len);
  }
  // Host bits beyond the prefix are ignored.
  for (uint32_t bit = n.prefix; bit < 128; ++bit) {
    n.bytes[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  }
  return n;
}

// ---- parser and compiler ---------------------------------------------------------------------

class Compiler;

class Parser {
 public:
  Parser(Compiler& c, std::vector<Token> tokens, Where where)
      : c_(c), t_(std::move(tokens)), where_(where) {}

  // The whole expression; the tokens must not be empty of content.
  uint32_t parse(int depth);

 private:
  const Token& peek() const { return t_[i_]; }
  const Token& next() { return t_[i_ < t_.size() - 1 ? i_++ : i_]; }
  uint32_t parse_or(int depth);
  uint32_t parse_and(int depth);
  uint32_t parse_not(int depth);
  uint32_t parse_primary(int depth);
  uint32_t parse_predicate(const AttrInfo& attr, const Token& name);

  Compiler& c_;
  std::vector<Token> t_;
  size_t i_ = 0;
  Where where_;
};

class Compiler {
 public:
  Compiler(const RulesSpec& spec, RuleSet::Impl& out) : spec_(spec), out_(out) {}

  // The root of `text`, or kAlways when it is empty.
  uint32_t compile(std::string_view text, Where where) {
    std::vector<Token> tokens = lex(text);
    if (tokens.size() == 1) return kAlways;
    const uint32_t root = Parser(*this, std::move(tokens), where).parse(0);
    if (weight_[root] > kMaxExpanded) {
      throw CompileError{0, "expression too large after macro expansion (more than " +
                                std::to_string(kMaxExpanded) + " operators and predicates)"};
    }
    return root;
  }

  // A macro's root for this use (compiled on first use per scope/event).
  uint32_t macro(const std::string& name, Where where, size_t pos, int depth) {
    const auto key = std::make_pair(name, where);
    if (const auto it = memo_.find(key); it != memo_.end()) return it->second;
    if (std::find(active_.begin(), active_.end(), name) != active_.end()) {
      std::string chain;
      for (auto it = std::find(active_.begin(), active_.end(), name); it != active_.end(); ++it) {
        chain += shown(*it) + " -> ";
      }
      throw_at(pos, "macro cycle: " + chain + shown(name));
    }
    const std::string& text = spec_.macros.at(name);
    active_.push_back(name);
    uint32_t root = kAlways;
    try {
      std::vector<Token> tokens = lex(text);
      if (tokens.size() == 1) throw CompileError{0, "empty macro"};
      root = Parser(*this, std::move(tokens), where).parse(depth);
    } catch (CompileError& e) {
      active_.pop_back();
      if (e.message.starts_with("macro cycle: ")) throw_at(pos, std::move(e.message));
      std::string where_in = "in macro " + netmon::quoted(name);
      if (e.column != 0) where_in += ", column " + std::to_string(e.column);
      throw_at(pos, where_in + ": " + e.message);
    }
    active_.pop_back();
    memo_.emplace(key, root);
    return root;
  }

  bool has_macro(const std::string& name) const { return spec_.macros.count(name) != 0; }
  const std::vector<std::string>* list(const std::string& name) const {
    const auto it = spec_.lists.find(name);
    return it == spec_.lists.end() ? nullptr : &it->second;
  }

  uint32_t add_node(Op op, uint32_t a, uint32_t b, size_t pos) {
    uint64_t weight = 1;
    uint32_t height = 1;
    auto child = [&](uint32_t k) {
      weight = std::min(weight + weight_[k], kMaxExpanded + 1);
      height = std::max(height, height_[k] + 1);
    };
    if (op == Op::kNot) child(a);
    if (op == Op::kAnd || op == Op::kOr) {
      for (uint32_t i = a; i < a + b; ++i) child(out_.children[i]);
    }
    if (height > kMaxDepth) throw_at(pos, "expression nested too deeply");
    out_.nodes.push_back(Node{op, a, b});
    weight_.push_back(weight);
    height_.push_back(height);
    return static_cast<uint32_t>(out_.nodes.size() - 1);
  }

  uint32_t add_group(Op op, const std::vector<uint32_t>& kids, size_t pos) {
    const auto first = static_cast<uint32_t>(out_.children.size());
    out_.children.insert(out_.children.end(), kids.begin(), kids.end());
    return add_node(op, first, static_cast<uint32_t>(kids.size()), pos);
  }

  uint32_t intern(std::string_view s) {
    const auto it = interned_.find(std::string(s));
    if (it != interned_.end()) return it->second;
    const auto off = static_cast<uint32_t>(out_.strings.size());
    out_.strings += s;
    interned_.emplace(std::string(s), off);
    return off;
  }

  // Adds one value of `attr` (from a token, or from a list when `is_number` is false and the
  // text is raw). Throws a message without a column.
  void add_value(const AttrInfo& attr, std::string_view text, bool is_number) {
    Value v;
    switch (attr.kind) {
      case Kind::kIpv4:
      case Kind::kIpv6: {
        if (is_number) {
          throw CompileError{0, std::string(attr.name) +
                                    " needs a double-quoted address or CIDR, got number " +
                                    shown(text)};
        }
        const Network n = parse_network(text);
        if (attr.kind == Kind::kIpv4 && n.v6) {
          throw CompileError{0, std::string(attr.name) + " needs an IPv4 address, got IPv6 " +
                                    netmon::quoted(text) + " (use ipv6_" +
                                    std::string(attr.name.substr(5)) + ")"};
        }
        if (attr.kind == Kind::kIpv6 && !n.v6) {
          throw CompileError{0, std::string(attr.name) + " needs an IPv6 address, got IPv4 " +
                                    netmon::quoted(text) + " (use ipv4_" +
                                    std::string(attr.name.substr(5)) + ")"};
        }
        if (n.v6 && n.prefix >= 96 && is_v4_mapped(n.bytes)) {
          throw CompileError{0, std::string(attr.name) + " can never match the IPv4-mapped " +
                                    netmon::quoted(text) +
                                    ": such connections count as IPv4 (use ipv4_" +
                                    std::string(attr.name.substr(5)) + ")"};
        }
        v.bytes = n.bytes;
        v.number = n.prefix;
        break;
      }
      case Kind::kPort:
      case Kind::kUid: {
        const bool port = attr.kind == Kind::kPort;
        const auto n = parse_unsigned(text);
        if (!n) {
          throw CompileError{0, std::string(attr.name) + " needs " +
                                    (port ? "a port number" : "a numeric uid") + ", got " +
                                    netmon::quoted(text)};
        }
        const uint64_t max = port ? 65535 : std::numeric_limits<uint32_t>::max();
        if (*n > max) {
          throw CompileError{0, std::string(port ? "port " : "uid ") + shown(text) +
                                    " is out of range (0-" + std::to_string(max) + ")"};
        }
        v.number = static_cast<uint32_t>(*n);
        break;
      }
      case Kind::kString:
        if (is_number) {
          throw CompileError{0, std::string(attr.name) +
                                    " needs a double-quoted string, got number " + shown(text)};
        }
        v.str_off = intern(text);
        v.str_len = static_cast<uint32_t>(text.size());
        break;
      case Kind::kPeerKind: {
        const PeerKind* kind = std::find_if(std::begin(kRulePeerKinds), std::end(kRulePeerKinds),
                                            [&](PeerKind k) { return to_string(k) == text; });
        if (is_number || kind == std::end(kRulePeerKinds)) {
          throw CompileError{0, std::string(attr.name) +
                                    " needs one of \"pod\", \"service\", \"node\", \"host\", "
                                    "\"external\", got " +
                                    (is_number ? "number " + shown(text) : netmon::quoted(text))};
        }
        v.number = static_cast<uint32_t>(*kind);
        break;
      }
    }
    out_.values.push_back(v);
  }

  RuleSet::Impl& out() { return out_; }

 private:
  const RulesSpec& spec_;
  RuleSet::Impl& out_;
  std::vector<uint64_t> weight_;  // per node: size after expansion, saturated
  std::vector<uint32_t> height_;  // per node
  std::map<std::pair<std::string, Where>, uint32_t> memo_;
  std::vector<std::string> active_;  // macros being expanded, outermost first
  std::unordered_map<std::string, uint32_t> interned_;
};

uint32_t Parser::parse(int depth) {
  const uint32_t root = parse_or(depth);
  const Token& t = peek();
  if (t.type == Tok::kRParen) throw_at(t.pos, "unbalanced parentheses: ')' without '('");
  if (t.type != Tok::kEnd) {
    throw_at(t.pos, "expected AND, OR or end of expression, got " + describe(t));
  }
  return root;
}

uint32_t Parser::parse_or(int depth) {
  const size_t pos = peek().pos;
  std::vector<uint32_t> kids{parse_and(depth)};
  while (peek().type == Tok::kOr) {
    next();
    kids.push_back(parse_and(depth));
  }
  return kids.size() == 1 ? kids[0] : c_.add_group(Op::kOr, kids, pos);
}

uint32_t Parser::parse_and(int depth) {
  const size_t pos = peek().pos;
  std::vector<uint32_t> kids{parse_not(depth)};
  while (peek().type == Tok::kAnd) {
    next();
    kids.push_back(parse_not(depth));
  }
  return kids.size() == 1 ? kids[0] : c_.add_group(Op::kAnd, kids, pos);
}

uint32_t Parser::parse_not(int depth) {
  if (peek().type != Tok::kNot) return parse_primary(depth);
  const size_t pos = next().pos;
  if (depth + 1 > kMaxDepth) throw_at(pos, "expression nested too deeply");
  const uint32_t child = parse_not(depth + 1);
  return c_.add_node(Op::kNot, child, 0, pos);
}

uint32_t Parser::parse_primary(int depth) {
  const Token& t = next();
  switch (t.type) {
    case Tok::kLParen: {
      if (depth + 1 > kMaxDepth) throw_at(t.pos, "expression nested too deeply");
      const uint32_t inner = parse_or(depth + 1);
      const Token& close = next();
      if (close.type != Tok::kRParen) {
        throw_at(close.pos, "unbalanced parentheses: expected ')' for '(' at column " +
                                std::to_string(t.pos + 1) + ", got " + describe(close));
      }
      return inner;
    }
    case Tok::kIdent: {
      if (const AttrInfo* attr = find_attr(t.text)) return parse_predicate(*attr, t);
      const Tok after = peek().type;
      if (after == Tok::kEq || after == Tok::kIn || after == Tok::kLBracket) {
        throw_at(t.pos, "unknown attribute " + netmon::quoted(t.text));
      }
      if (!c_.has_macro(t.text))
        throw_at(t.pos, "unknown attribute or macro " + netmon::quoted(t.text));
      if (depth + 1 > kMaxDepth) throw_at(t.pos, "expression nested too deeply");
      return c_.macro(t.text, where_, t.pos, depth + 1);
    }
    case Tok::kRParen:
      throw_at(t.pos, "unbalanced parentheses: ')' without '('");
    default:
      throw_at(t.pos, "expected a predicate (attribute, macro, NOT or '('), got " + describe(t));
  }
}

uint32_t Parser::parse_predicate(const AttrInfo& attr, const Token& name) {
  if (where_ != Where::kAny && attr.where != where_) {
    throw_at(name.pos, "attribute " + netmon::quoted(attr.name) + " belongs in " +
                           (attr.where == Where::kScope ? "scope" : "event") + ", not in " +
                           (where_ == Where::kScope ? "scope" : "event"));
  }
  RuleSet::Impl& out = c_.out();
  Pred pred{attr.attr};
  if (has_key(attr.attr)) {
    const std::string name_text(attr.name);
    const Token& open = next();
    if (open.type != Tok::kLBracket) {
      throw_at(open.pos,
               name_text + " needs a key: " + name_text + "[\"app\"], got " + describe(open));
    }
    const Token& key = next();
    if (key.type != Tok::kString) {
      throw_at(key.pos, name_text + " needs a double-quoted key, got " + describe(key));
    }
    const Token& close = next();
    if (close.type != Tok::kRBracket) {
      throw_at(close.pos, "expected ']' after the label key, got " + describe(close));
    }
    pred.key_off = c_.intern(key.text);
    pred.key_len = static_cast<uint32_t>(key.text.size());
  } else if (peek().type == Tok::kLBracket) {
    throw_at(peek().pos, "attribute " + netmon::quoted(attr.name) + " takes no key");
  }
  pred.first = static_cast<uint32_t>(out.values.size());

  auto value = [&](const Token& t) {
    try {
      c_.add_value(attr, t.text, t.type == Tok::kNumber);
    } catch (CompileError& e) {
      throw_at(t.pos, std::move(e.message));
    }
  };
  auto list = [&](const Token& t) {
    const std::vector<std::string>* values = c_.list(t.text);
    if (values == nullptr) throw_at(t.pos, "unknown list " + netmon::quoted(t.text));
    for (size_t i = 0; i < values->size(); ++i) {
      try {
        c_.add_value(attr, (*values)[i], false);
      } catch (CompileError& e) {
        throw_at(t.pos, "list " + netmon::quoted(t.text) + " item " + std::to_string(i + 1) + ": " +
                            e.message);
      }
    }
  };

  const Token& op = next();
  if (op.type == Tok::kEq) {
    const Token& v = next();
    if (v.type != Tok::kString && v.type != Tok::kNumber) {
      throw_at(v.pos, "expected a value after '==', got " + describe(v));
    }
    value(v);
  } else if (op.type == Tok::kIn) {
    const Token& open = next();
    if (open.type == Tok::kIdent) {
      list(open);
    } else if (open.type == Tok::kLBracket) {
      if (peek().type == Tok::kRBracket) {
        next();
      } else {
        for (;;) {
          const Token& item = next();
          if (item.type == Tok::kString || item.type == Tok::kNumber) {
            value(item);
          } else if (item.type == Tok::kIdent) {
            list(item);
          } else {
            throw_at(item.pos, "expected a value or a list name in '[...]', got " + describe(item));
          }
          const Token& sep = next();
          if (sep.type == Tok::kRBracket) break;
          if (sep.type != Tok::kComma) {
            throw_at(sep.pos, "expected ',' or ']' in the list opened at column " +
                                  std::to_string(open.pos + 1) + ", got " + describe(sep));
          }
        }
      }
    } else {
      throw_at(open.pos, "expected '[' or a list name after 'in', got " + describe(open));
    }
  } else {
    throw_at(op.pos,
             "expected '==' or 'in' after " + netmon::quoted(attr.name) + ", got " + describe(op));
  }
  pred.count = static_cast<uint32_t>(out.values.size()) - pred.first;
  out.preds.push_back(pred);
  return c_.add_node(Op::kPred, static_cast<uint32_t>(out.preds.size() - 1), 0, name.pos);
}

std::string rule_label(std::string_view direction, const RuleSpec& rule) {
  std::string s = std::string(direction) + " rule " + netmon::quoted(rule.name);
  if (rule.line > 0) s += " (line " + std::to_string(rule.line) + ")";
  return s;
}

Result<bool> compile_direction(const RulesSpec& spec, const DirectionSpec& dir,
                               std::string_view direction, RuleSet::Impl& out) {
  out.enabled = dir.enabled;
  Compiler compiler(spec, out);
  std::unordered_map<std::string, int> seen;  // name -> line
  for (const RuleSpec& rule : dir.rules) {
    if (rule.name.empty()) return fail(rule_label(direction, rule) + ": the rule has no name");
    if (const auto it = seen.find(rule.name); it != seen.end()) {
      std::string msg = rule_label(direction, rule) + ": duplicate rule name";
      if (it->second > 0) msg += " (first at line " + std::to_string(it->second) + ")";
      return fail(std::move(msg));
    }
    seen.emplace(rule.name, rule.line);
    RuleSet::Impl::Rule compiled;
    for (const bool scope : {true, false}) {
      try {
        (scope ? compiled.scope : compiled.event) = compiler.compile(
            scope ? rule.scope : rule.event, scope ? Where::kScope : Where::kEvent);
      } catch (CompileError& e) {
        std::string msg = rule_label(direction, rule) + (scope ? " scope" : " event");
        if (e.column != 0) msg += ", column " + std::to_string(e.column);
        return fail(msg + ": " + e.message);
      }
    }
    out.names.push_back(rule.name);
    out.rules.push_back(compiled);
  }
  return true;
}

// Letters, digits, '_' and '-', not starting with a digit or '-', and not a keyword.
bool is_name(std::string_view s) {
  if (s.empty() || !is_ident_start(s[0])) return false;
  if (!std::all_of(s.begin(), s.end(), is_ident_char)) return false;
  return !ieq(s, "and") && !ieq(s, "or") && !ieq(s, "not") && !ieq(s, "in");
}

}  // namespace

Result<CompiledRules> compile_rules(const RulesSpec& spec) {
  for (const auto& [name, values] : spec.lists) {
    if (!is_name(name)) {
      return fail("list " + netmon::quoted(name) +
                  ": a name is letters, digits, '_' and '-', starts with a letter or '_', and is "
                  "not AND, OR, NOT or in");
    }
  }
  for (const auto& [name, text] : spec.macros) {
    if (!is_name(name)) {
      return fail("macro " + netmon::quoted(name) +
                  ": a name is letters, digits, '_' and '-', starts with a letter or '_', and is "
                  "not AND, OR, NOT or in");
    }
    if (find_attr(name) != nullptr) {
      return fail("macro " + netmon::quoted(name) + ": the name is an attribute's");
    }
  }

  CompiledRules out;
  if (auto r = compile_direction(spec, spec.egress, "egress", *out.egress.impl_); !r) {
    return tl::unexpected(std::move(r.error()));
  }
  if (auto r = compile_direction(spec, spec.ingress, "ingress", *out.ingress.impl_); !r) {
    return tl::unexpected(std::move(r.error()));
  }

  // Every macro must be valid even when no rule uses it (here without the scope/event check,
  // which depends on the use).
  RuleSet::Impl scratch;
  Compiler checker(spec, scratch);
  for (const auto& [name, text] : spec.macros) {
    try {
      checker.macro(name, Where::kAny, 0, 0);
    } catch (CompileError& e) {
      // "in macro "m", column 3: ..." (the use's column, 1 here, is moot) or a cycle.
      if (e.message.starts_with("in ")) return fail(e.message.substr(3));
      return fail("macro " + netmon::quoted(name) + ": " + e.message);
    }
  }
  return out;
}

}  // namespace netmon
