// Rules: the reference's rule language, compiled once at start-up into a form that evaluates
// without allocation. A rule names an event (the first matching rule's name goes into `rule`);
// with rules configured for a direction, events matching none are not reported.
//
// This module knows no YAML: agent/config turns the configuration file into RulesSpec.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "events/event.h"
#include "k8s/peer_index.h"
#include "k8s/pods.h"

namespace netmon {

// One rule as written in the configuration.
struct RuleSpec {
  std::string name;   // `rule:`
  std::string scope;  // `scope:` predicate over the process and pod; "" = every process
  std::string event;  // `event:` predicate over the connection; "" = every connection
  int line = 0;       // line of the rule in the configuration file, for error messages (0: n/a)
};

struct DirectionSpec {
  bool enabled = true;          // `enabled: false` turns the direction's events off entirely
  std::vector<RuleSpec> rules;  // empty: every event of the direction, without `rule`
};

struct RulesSpec {
  DirectionSpec egress;   // Establish and Failed
  DirectionSpec ingress;  // Accept
  // Top-level `lists:` (name -> values, usable as `in NAME` or inside `in [...]`) and `macros:`
  // (name -> sub-expression, usable wherever a predicate is).
  std::map<std::string, std::vector<std::string>> lists;
  std::map<std::string, std::string> macros;
};

// What a rule can look at, for one event. Views must outlive evaluate(); no copies are made.
struct RuleInput {
  const IpAddress* saddr = nullptr;
  const IpAddress* daddr = nullptr;
  uint16_t sport = 0;
  uint16_t dport = 0;
  std::string_view binary_path;         // "" when unknown
  std::string_view parent_binary_path;  // "" when unknown
  std::optional<uint32_t> uid;          // nullopt when the owner is unknown
  const PodMeta* pod = nullptr;         // null for host processes
  const ContainerMeta* container = nullptr;
  const Peer* peer = nullptr;  // the remote end (daddr of the record); null: no peer index
  // The backend the node translated the connection to (peer.backend); null: none or unknown.
  const Peer* backend = nullptr;
};

// The compiled rules of one direction.
class RuleSet {
 public:
  RuleSet();
  ~RuleSet();
  RuleSet(RuleSet&&) noexcept;
  RuleSet& operator=(RuleSet&&) noexcept;

  bool enabled() const;    // false: the direction's events are not reported at all
  bool has_rules() const;  // false: every event is reported, without a rule name
  // The name of the first rule whose scope and event both hold; nullopt when none does (or the
  // set has no rules). Allocation-free.
  std::optional<std::string_view> match(const RuleInput& input) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  friend Result<struct CompiledRules> compile_rules(const RulesSpec& spec);
};

struct CompiledRules {
  RuleSet egress;
  RuleSet ingress;
};

// Compiles every rule. Fails with a message naming the direction, the rule, the line and what
// is wrong: a malformed expression (with the column), an unknown attribute, a value of the wrong
// kind for its attribute (a bad address or CIDR, a port outside 0-65535), an unknown list or
// macro, a macro that refers to itself.
Result<CompiledRules> compile_rules(const RulesSpec& spec);

}  // namespace netmon
