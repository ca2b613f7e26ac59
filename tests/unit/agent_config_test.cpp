// What --check-config and --print-config validate (validate_config, the same as a start does
// before it touches the kernel), --check-config itself, and a hook given twice in
// --hook-variant.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "app/agent.h"
#include "bpf/probe.h"
#include "cli/options.h"

namespace netmon {
namespace {

EnvLookup no_environment() {
  return [](const char*) -> std::optional<std::string> { return std::nullopt; };
}

// The options of `yaml` as the configuration file; its parse must succeed.
Options from_yaml(const std::string& yaml) {
  Options o;
  auto applied = apply_config(o, yaml, "test.yaml");
  EXPECT_TRUE(applied) << applied.error().message;
  return o;
}

// validate_config's message for `yaml`, "" when it is valid.
std::string invalid(const std::string& yaml) {
  auto r = validate_config(from_yaml(yaml));
  return r ? std::string() : r.error().message;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(ValidateConfig, DefaultsAndGoodRulesAreValid) {
  EXPECT_EQ(invalid("log_level: info\n"), "");
  EXPECT_EQ(invalid("egress:\n  rules:\n  - rule: web\n    event: port_dst in [80, 443]\n"), "");
}

// Each of these parses (and --print-config used to print it, exit 0) but a start refuses it.
TEST(ValidateConfig, RefusesWhatAStartRefuses) {
  const std::string cycle =
      invalid("egress:\n  rules:\n  - rule: r\n    event: a\nmacros:\n  a: b\n  b: a\n");
  EXPECT_TRUE(contains(cycle, "macro cycle: a -> b -> a")) << cycle;
  const std::string port =
      invalid("ingress:\n  rules:\n  - rule: r\n    event: port_dst == 70000\n");
  EXPECT_TRUE(contains(port, "port 70000 is out of range (0-65535)")) << port;
  std::string deep = "port_dst == 1";
  for (int i = 0; i < 200; ++i) deep = "(" + deep + ")";
  const std::string depth =
      invalid("egress:\n  rules:\n  - rule: r\n    event: \"" + deep + "\"\n");
  EXPECT_TRUE(contains(depth, "nested too deeply")) << depth;
}

TEST(ValidateConfig, RefusesATokenOverPlainHttpWithoutTheFlag) {
  // --check-config reads no host file, but a token over http:// is a matter of the settings.
  const std::string e = invalid(
      "kubernetes:\n  kubelet_url: http://127.0.0.1:10255/pods\n  token_file: "
      "/nonexistent/token\n");
  EXPECT_TRUE(contains(e, "--kubelet-allow-http-token")) << e;
  EXPECT_EQ(invalid("kubernetes:\n  kubelet_url: http://127.0.0.1:10255/pods\n  token_file: "
                    "/nonexistent/token\n  kubelet_allow_http_token: true\n"),
            "");
}

TEST(ValidateConfig, RefusesATokenOverPlainHttpToTheApiServerWithoutTheFlag) {
  const std::string yaml =
      "kubernetes:\n  api_url: http://127.0.0.1:8080\n  api_token_file: /nonexistent/token\n";
  EXPECT_EQ(invalid(yaml),
            "the API server URL 'http://127.0.0.1:8080' is plain HTTP and would carry the bearer "
            "token of '/nonexistent/token' in cleartext; use https, or allow it with "
            "--kube-api-allow-http-token");
  EXPECT_EQ(invalid(yaml + "  api_allow_http_token: true\n"), "");
  // Without a token, or over https, there is nothing to allow; the files are not read here.
  EXPECT_EQ(invalid("kubernetes:\n  api_url: http://127.0.0.1:8080\n"), "");
  EXPECT_EQ(invalid("kubernetes:\n  api_url: https://127.0.0.1:6443\n  api_token_file: "
                    "/nonexistent/token\n  api_ca_file: /nonexistent/ca\n"),
            "");
  // The kubelet's flag does not allow it for the API server, nor the other way round.
  EXPECT_NE(invalid(yaml + "  kubelet_allow_http_token: true\n"), "");
  // A flag or variable is checked the same way (--check-config exits 2).
  auto r = parse_options(
      {"--check-config", "--kube-api-url=http://api:8080", "--kube-api-token-file=/t"},
      no_environment());
  ASSERT_TRUE(r) << r.error().message;
  auto valid = validate_config(*r);
  ASSERT_FALSE(valid);
  EXPECT_TRUE(contains(valid.error().message, "--kube-api-allow-http-token"))
      << valid.error().message;
}

TEST(ValidateConfig, ABadFaultInjectionVariableIsRefusedWithTheSettings) {
  // Read with the other NETMON_... variables: --check-config and a start refuse it alike.
  auto r = parse_options({"--check-config"}, [](const char* name) -> std::optional<std::string> {
    if (std::string(name) == "NETMON_FAULT_SKIP_STATE") return "sometimes";
    return std::nullopt;
  });
  ASSERT_FALSE(r);
  EXPECT_TRUE(contains(r.error().message, "NETMON_FAULT_SKIP_STATE")) << r.error().message;
}

TEST(CheckConfigFlag, IsACommand) {
  auto r = parse_options({"--check-config"}, no_environment());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->check_config);
  EXPECT_FALSE(r->print_config);
  auto bad = parse_options({"--check-config=yes"}, no_environment());
  ASSERT_FALSE(bad);
  EXPECT_TRUE(contains(bad.error().message, "--check-config takes no value"));
  EXPECT_TRUE(contains(usage_text(), "--check-config"));
}

TEST(HookVariantFlag, RefusesAHookGivenTwice) {
  auto twice = parse_hook_variants("state=tp_btf,state=tracepoint");
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().message,
            "the state hook is given twice ('state=tp_btf', 'state=tracepoint')");
  auto same = parse_hook_variants("accept=fexit,process=raw_tp,accept=fexit");
  ASSERT_FALSE(same);
  EXPECT_TRUE(contains(same.error().message, "the accept hook is given twice"));
  auto flag = parse_options({"--hook-variant", "state=tp_btf,state=tracepoint"}, no_environment());
  ASSERT_FALSE(flag);
  EXPECT_TRUE(
      contains(flag.error().message, "invalid --hook-variant: the state hook is given twice"))
      << flag.error().message;
  auto each_once = parse_hook_variants("state=tracepoint,accept=auto,process=raw_tp");
  ASSERT_TRUE(each_once) << each_once.error().message;
  EXPECT_EQ(each_once->state, HookVariant::kTracepoint);
  EXPECT_EQ(each_once->process, HookVariant::kRawTp);
}

}  // namespace
}  // namespace netmon
