// libFuzzer target for the rule language (agent/rules): the input is split at newlines into a
// scope, an event and the body of a macro `m`; whatever compiles is evaluated against a few fixed
// connections. Nothing may crash, hang or trip a sanitizer, and compiled rules must behave.
//
// Build and run (not part of the CMake build):
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I agent -I bpf \
//     tests/fuzz/rules_fuzz.cpp agent/rules/rules.cpp -o /tmp/rules_fuzz
//   /tmp/rules_fuzz -max_total_time=60 -max_len=512
#include <arpa/inet.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>

#include "rules/rules.h"

namespace {

using netmon::IpAddress;

IpAddress address(int family, const char* text) {
  IpAddress a;
  a.family = family == AF_INET ? IpAddress::Family::kV4 : IpAddress::Family::kV6;
  if (inet_pton(family, text, a.bytes.data()) != 1) std::abort();
  return a;
}

struct Fixture {
  netmon::PodMeta pod;
  IpAddress v4_src = address(AF_INET, "10.1.2.3");
  IpAddress v4_dst = address(AF_INET, "8.8.8.8");
  IpAddress v6_src = address(AF_INET6, "fd00::1");
  IpAddress v6_dst = address(AF_INET6, "::1");
  IpAddress mapped_src = address(AF_INET6, "::ffff:127.0.0.1");
  IpAddress mapped_dst = address(AF_INET6, "::ffff:192.168.1.1");
  netmon::RuleInput inputs[4];

  Fixture() {
    pod.namespace_name = "shop";
    pod.name = "web-7d4b9c-x2x9z";
    pod.workload = "web";
    pod.workload_kind = "Deployment";
    pod.labels = {{"app", "web"}, {"tier", "front"}};
    pod.containers.push_back(netmon::ContainerMeta{"abc", "containerd", "nginx", "nginx", "sha"});

    // An IPv4 connection from a pod.
    inputs[0] = {&v4_src, &v4_dst,           40000, 443, "/usr/bin/curl", "/bin/sh", 1000u,
                 &pod,    &pod.containers[0]};
    // An IPv6 connection from a host process with little known about it.
    inputs[1] = {&v6_src, &v6_dst, 7879, 22, "", "", std::nullopt, nullptr, nullptr};
    // IPv4-mapped addresses, uid 0, a binary without a directory.
    inputs[2] = {&mapped_src, &mapped_dst, 0, 65535, "nc.openbsd", "/sbin/init", 0u, &pod, nullptr};
    // No addresses at all.
    inputs[3] = {nullptr, nullptr, 1, 1, "/", "/", 4294967295u, nullptr, nullptr};
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Fixture fixture;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  // scope \n event \n macro m
  std::string_view parts[3];
  std::string_view rest = text;
  for (int i = 0; i < 3; ++i) {
    const size_t nl = i < 2 ? rest.find('\n') : std::string_view::npos;
    parts[i] = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
  }

  netmon::RulesSpec spec;
  spec.lists = {{"private", {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}},
                {"private6", {"fd00::/8", "::1"}},
                {"web", {"80", "443"}},
                {"names", {"curl", "nc.openbsd", ""}}};
  spec.macros = {{"web_dst", "port_dst in web"},
                 {"in_shop", "namespace == \"shop\" AND pod_label[\"app\"] in [\"web\"]"}};
  // Macros are checked even when unused, so `m` exists only when the input has a third part.
  if (!parts[2].empty()) spec.macros.emplace("m", std::string(parts[2]));

  // The same predicates the other way round: mostly errors, which must be reported cleanly.
  netmon::RulesSpec swapped = spec;
  swapped.ingress.rules.push_back({"swapped", std::string(parts[1]), std::string(parts[0]), 3});
  if (const auto c = netmon::compile_rules(swapped); !c && c.error().message.empty()) std::abort();

  spec.egress.rules.push_back({"fuzz", std::string(parts[0]), std::string(parts[1]), 1});
  spec.egress.rules.push_back({"all", "", "", 2});
  spec.ingress.rules.push_back({"fuzz", std::string(parts[0]), std::string(parts[1]), 0});
  const auto compiled = netmon::compile_rules(spec);
  if (!compiled) {
    if (compiled.error().message.empty()) std::abort();
    return 0;
  }
  for (const netmon::RuleInput& in : fixture.inputs) {
    // "all" matches everything, so egress always names a rule; ingress has only "fuzz", which
    // must match exactly when it does in egress.
    const auto egress = compiled->egress.match(in);
    if (!egress || (*egress != "fuzz" && *egress != "all")) std::abort();
    const auto ingress = compiled->ingress.match(in);
    if (ingress.has_value() != (*egress == "fuzz")) std::abort();
    if (ingress && *ingress != "fuzz") std::abort();
  }
  return 0;
}
