#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bpf/probe.h"
#include "cli/options.h"
#include "netmon_events.h"

namespace netmon {
namespace {

using Args = std::vector<std::string>;
using Env = std::map<std::string, std::string>;

EnvLookup env_of(Env vars) {
  return [vars = std::move(vars)](const char* name) -> std::optional<std::string> {
    if (auto it = vars.find(name); it != vars.end()) return it->second;
    return std::nullopt;
  };
}

Result<Options> parse(const Args& args, Env env = {}) {
  return parse_options(args, env_of(std::move(env)));
}

// The error message of a parse that must fail.
std::string error_of(const Args& args, Env env = {}) {
  const auto r = parse(args, std::move(env));
  if (r) {
    ADD_FAILURE() << "parse unexpectedly succeeded";
    return "";
  }
  return r.error().message;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(OptionsParse, DefaultsWithoutFlagsOrEnvironment) {
  const auto r = parse({});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->show_help);
  EXPECT_FALSE(r->show_version);
  EXPECT_EQ(r->log_level, log::Level::kInfo);
  EXPECT_EQ(r->probe.variants.state, HookVariant::kAuto);
  EXPECT_EQ(r->probe.ring_buffer_bytes, 4u << 20);
  EXPECT_EQ(r->probe.max_connections, 262144u);
  EXPECT_EQ(r->output_queue_bytes, size_t{8} << 20);
  EXPECT_EQ(r->output_max_pause_ms, 1000u);
  EXPECT_EQ(r->proc_root, "/proc");
  EXPECT_EQ(r->max_processes, 65536u);
  EXPECT_FALSE(r->print_config);
  EXPECT_EQ(r->config_file, "");
  EXPECT_EQ(r->kubelet_url, "");
  EXPECT_FALSE(r->kubelet_insecure_skip_verify);
  EXPECT_EQ(r->kubelet_poll_interval_s, 10u);
  EXPECT_EQ(r->pod_grace_period_s, 60u);
  EXPECT_TRUE(r->pod_labels);
  EXPECT_EQ(r->metrics_address, "0.0.0.0:9477");
  EXPECT_TRUE(r->metrics_drop_labels.empty());
  EXPECT_TRUE(r->events.establish);
  EXPECT_TRUE(r->events.accept);
  EXPECT_TRUE(r->events.close);
  EXPECT_TRUE(r->events.failed);
  EXPECT_TRUE(r->rules.egress.enabled);
  EXPECT_TRUE(r->rules.ingress.enabled);
  EXPECT_TRUE(r->rules.egress.rules.empty());
  EXPECT_TRUE(r->rules.ingress.rules.empty());
  EXPECT_EQ(r->kube_api_url, "");
  EXPECT_EQ(r->kube_api_token_file, "");
  EXPECT_EQ(r->kube_api_ca_file, "");
  EXPECT_FALSE(r->kube_api_insecure_skip_verify);
  EXPECT_FALSE(r->kube_api_allow_http_token);
  EXPECT_FALSE(r->watch_pods);
  EXPECT_FALSE(r->peer_labels);
  EXPECT_TRUE(r->external_networks.empty());
}

TEST(OptionsParse, LogLevelSeparateAndInlineValue) {
  for (const Args& args : {Args{"--log-level", "debug"}, Args{"--log-level=debug"}}) {
    const auto r = parse(args);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->log_level, log::Level::kDebug);
  }
  EXPECT_EQ(parse({"--log-level=warn"})->log_level, log::Level::kWarn);
  EXPECT_EQ(parse({"--log-level", "error"})->log_level, log::Level::kError);
  EXPECT_EQ(parse({"--log-level", "warning"})->log_level, log::Level::kWarn);
}

TEST(OptionsParse, HookVariantSeparateAndInlineValue) {
  for (const Args& args :
       {Args{"--hook-variant", "tracepoint"}, Args{"--hook-variant=tracepoint"}}) {
    const auto r = parse(args);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->probe.variants.state, HookVariant::kTracepoint);
  }
  EXPECT_EQ(parse({"--hook-variant=tp_btf"})->probe.variants.state, HookVariant::kTpBtf);
}

TEST(OptionsParse, RingBufferBytesSeparateAndInlineValue) {
  for (const Args& args :
       {Args{"--ring-buffer-bytes", "65536"}, Args{"--ring-buffer-bytes=65536"}}) {
    const auto r = parse(args);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->probe.ring_buffer_bytes, 65536u);
  }
}

TEST(OptionsParse, MaxConnectionsSeparateAndInlineValue) {
  for (const Args& args : {Args{"--max-connections", "5000"}, Args{"--max-connections=5000"}}) {
    const auto r = parse(args);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->probe.max_connections, 5000u);
  }
}

TEST(OptionsParse, OutputQueueBytesSeparateAndInlineValue) {
  for (const Args& args :
       {Args{"--output-queue-bytes", "1000000"}, Args{"--output-queue-bytes=1000000"}}) {
    const auto r = parse(args);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->output_queue_bytes, 1000000u);
  }
}

TEST(OptionsParse, ProcRootSeparateAndInlineValue) {
  for (const Args& args : {Args{"--proc-root", "/host/proc"}, Args{"--proc-root=/host/proc"}}) {
    const auto r = parse(args);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->proc_root, "/host/proc");
  }
}

TEST(OptionsParse, ProcRootDropsTrailingSlashesButKeepsRoot) {
  EXPECT_EQ(parse({"--proc-root=/host/proc//"})->proc_root, "/host/proc");
  EXPECT_EQ(parse({"--proc-root=/"})->proc_root, "/");
  EXPECT_EQ(parse({"--proc-root=///"})->proc_root, "/");
}

TEST(OptionsParse, ProcRootMustBeAbsolute) {
  for (const char* v : {"proc", "", "./proc"}) {
    const std::string e = error_of({std::string("--proc-root=") + v});
    EXPECT_TRUE(contains(e, "--proc-root")) << e;
    EXPECT_TRUE(contains(e, "not an absolute path")) << e;
  }
}

TEST(OptionsParse, MaxProcessesSeparateAndInlineValue) {
  for (const Args& args : {Args{"--max-processes", "2048"}, Args{"--max-processes=2048"}}) {
    const auto r = parse(args);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->max_processes, 2048u);
  }
}

TEST(OptionsParse, MaxProcessesRange) {
  EXPECT_EQ(parse({"--max-processes=1024"})->max_processes, 1024u);
  EXPECT_EQ(parse({"--max-processes=4194304"})->max_processes, 4194304u);
  EXPECT_TRUE(contains(error_of({"--max-processes=1023"}), "out of range"));
  EXPECT_TRUE(contains(error_of({"--max-processes=4194305"}), "out of range"));
}

TEST(OptionsParse, SeveralFlagsTogether) {
  const auto r = parse({"--log-level=warn", "--max-connections", "2048", "--hook-variant=tp_btf"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->log_level, log::Level::kWarn);
  EXPECT_EQ(r->probe.max_connections, 2048u);
  EXPECT_EQ(r->probe.variants.state, HookVariant::kTpBtf);
}

TEST(OptionsParse, EnvironmentUsedWithoutFlags) {
  const auto r = parse({}, {{"NETMON_LOG_LEVEL", "debug"},
                            {"NETMON_HOOK_VARIANT", "tracepoint"},
                            {"NETMON_RING_BUFFER_BYTES", "1048576"},
                            {"NETMON_MAX_CONNECTIONS", "4096"},
                            {"NETMON_OUTPUT_QUEUE_BYTES", "131072"},
                            {"NETMON_PROC_ROOT", "/host/proc"},
                            {"NETMON_MAX_PROCESSES", "9999"}});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->log_level, log::Level::kDebug);
  EXPECT_EQ(r->probe.variants.state, HookVariant::kTracepoint);
  EXPECT_EQ(r->probe.ring_buffer_bytes, 1048576u);
  EXPECT_EQ(r->probe.max_connections, 4096u);
  EXPECT_EQ(r->output_queue_bytes, 131072u);
  EXPECT_EQ(r->proc_root, "/host/proc");
  EXPECT_EQ(r->max_processes, 9999u);
}

TEST(OptionsParse, FlagBeatsEnvironment) {
  const auto r = parse({"--log-level=error", "--max-connections", "8192"},
                       {{"NETMON_LOG_LEVEL", "debug"}, {"NETMON_MAX_CONNECTIONS", "4096"}});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->log_level, log::Level::kError);
  EXPECT_EQ(r->probe.max_connections, 8192u);
}

TEST(OptionsParse, LaterFlagBeatsEarlier) {
  const auto r = parse({"--log-level=error", "--log-level=debug"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->log_level, log::Level::kDebug);
}

TEST(OptionsParse, InvalidEnvironmentValueNamesTheVariable) {
  const std::string e = error_of({}, {{"NETMON_MAX_CONNECTIONS", "lots"}});
  EXPECT_TRUE(contains(e, "NETMON_MAX_CONNECTIONS")) << e;
  EXPECT_TRUE(contains(e, "'lots'")) << e;
}

TEST(OptionsParse, UnknownFlagErrorNamesIt) {
  const std::string e = error_of({"--frobnicate"});
  EXPECT_TRUE(contains(e, "--frobnicate")) << e;
  const std::string e2 = error_of({"--frobnicate=3"});
  EXPECT_TRUE(contains(e2, "--frobnicate")) << e2;
  EXPECT_FALSE(contains(e2, "=3")) << e2;
}

TEST(OptionsParse, PositionalArgumentIsRejected) {
  const std::string e = error_of({"-h"});
  EXPECT_TRUE(contains(e, "'-h'")) << e;
  EXPECT_FALSE(parse({"extra"}));
}

TEST(OptionsParse, MissingValueNamesFlagAndValue) {
  const std::string e = error_of({"--max-connections"});
  EXPECT_TRUE(contains(e, "--max-connections")) << e;
  EXPECT_TRUE(contains(e, "needs a value")) << e;
  EXPECT_TRUE(contains(e, "N")) << e;
}

TEST(OptionsParse, BadLogLevelNamesTheFlag) {
  const std::string e = error_of({"--log-level", "loud"});
  EXPECT_TRUE(contains(e, "--log-level")) << e;
  EXPECT_TRUE(contains(e, "'loud'")) << e;
}

TEST(OptionsParse, EmptyInlineValueIsInvalid) {
  const std::string e = error_of({"--log-level="});
  EXPECT_TRUE(contains(e, "--log-level")) << e;
}

TEST(OptionsParse, HookVariantPerHook) {
  const auto r = parse({"--hook-variant=state=tracepoint,accept=tracepoint,process=raw_tp"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->probe.variants.state, HookVariant::kTracepoint);
  EXPECT_EQ(r->probe.variants.accept, HookVariant::kTracepoint);
  EXPECT_EQ(r->probe.variants.process, HookVariant::kRawTp);
  EXPECT_EQ(parse({"--hook-variant=accept=tp_btf"})->probe.variants.accept, HookVariant::kTpBtf);
  const auto f = parse({"--hook-variant", "accept=fexit"});
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_EQ(f->probe.variants.state, HookVariant::kAuto);
  EXPECT_EQ(f->probe.variants.accept, HookVariant::kFexit);
  EXPECT_EQ(f->probe.variants.process, HookVariant::kAuto);
  EXPECT_EQ(parse({"--hook-variant=state=auto"})->probe.variants, HookVariants{});
}

TEST(OptionsParse, HookVariantsTextRoundTrips) {
  for (const char* text : {"auto", "state=tracepoint", "accept=fexit,process=raw_tp",
                           "state=tp_btf,accept=tracepoint,process=tp_btf", "accept=tp_btf"}) {
    const auto v = parse_hook_variants(text);
    ASSERT_TRUE(v) << text;
    EXPECT_EQ(hook_variants_text(*v), text);
  }
  EXPECT_EQ(hook_variants_text(*parse_hook_variants("tracepoint")), "state=tracepoint");
}

TEST(OptionsParse, FaultInjectionClassesMapToTheKernelBits) {
  EXPECT_EQ(*parse_fault_skip_state(""), 0u);
  EXPECT_EQ(*parse_fault_skip_state("open"), uint32_t{NM_FAULT_OPEN});
  EXPECT_EQ(*parse_fault_skip_state("end"), uint32_t{NM_FAULT_END});
  EXPECT_EQ(*parse_fault_skip_state("end,open"), uint32_t{NM_FAULT_OPEN | NM_FAULT_END});
  for (const char* bad : {"close", "open,", ",end", "open,,end"}) {
    const auto v = parse_fault_skip_state(bad);
    ASSERT_FALSE(v) << bad;
    EXPECT_TRUE(contains(v.error().message, "NETMON_FAULT_SKIP_STATE")) << v.error().message;
  }
  EXPECT_TRUE(contains(parse_fault_skip_state("open,close").error().message, "'close'"));
}

TEST(OptionsParse, SnapshotFallbackIsForcedByAVariableOnly) {
  auto r = parse({}, {{"NETMON_FAULT_SNAPSHOT", "netlink"}});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->probe.snapshot_netlink);
  r = parse({});
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->probe.snapshot_netlink);
  EXPECT_EQ(error_of({}, {{"NETMON_FAULT_SNAPSHOT", "iter"}}),
            "invalid NETMON_FAULT_SNAPSHOT: 'iter' is not \"netlink\" or empty");
  EXPECT_TRUE(contains(error_of({"--fault-snapshot=netlink"}), "unknown flag"));
}

TEST(OptionsParse, FaultInjectionIsAVariableOnly) {
  auto r = parse({}, {{"NETMON_FAULT_SKIP_STATE", "end,open"}});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->probe.fault_skip_state, uint32_t{NM_FAULT_OPEN | NM_FAULT_END});
  EXPECT_EQ(r->fault_skip_state, "end,open");
  r = parse({});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->probe.fault_skip_state, 0u);
  // A bad value names the variable once, in parse_fault_skip_state()'s words.
  EXPECT_EQ(error_of({}, {{"NETMON_FAULT_SKIP_STATE", "close"}}),
            "NETMON_FAULT_SKIP_STATE: 'close' is not a change class (open, end)");
  // No flag, no key: not in the help, not in the printed configuration.
  EXPECT_TRUE(contains(error_of({"--fault-skip-state=end"}), "unknown flag"));
  EXPECT_FALSE(contains(usage_text(), "FAULT"));
  EXPECT_FALSE(contains(render_config(*r), "fault"));
}

TEST(OptionsParse, BadPerHookVariantNamesHookAndChoices) {
  std::string e = error_of({"--hook-variant=accept=raw_tp"});
  EXPECT_TRUE(contains(e, "--hook-variant")) << e;
  EXPECT_TRUE(
      contains(e, "'raw_tp' is not a variant of the accept hook (auto, fexit, tracepoint, tp_btf)"))
      << e;
  e = error_of({"--hook-variant=state=fexit"});
  EXPECT_TRUE(contains(e, "'fexit' is not a variant of the state hook (auto, tp_btf, tracepoint)"))
      << e;
  e = error_of({"--hook-variant=socket=tp_btf"});
  EXPECT_TRUE(contains(e, "'socket=tp_btf'")) << e;
  e = error_of({"--hook-variant=state=tp_btf,"});
  EXPECT_TRUE(contains(e, "''")) << e;
}

TEST(KernelSupport, UnsupportedKernelMessageNamesEveryMissingFeature) {
  EXPECT_EQ(unsupported_kernel_message("5.4.0-1-amd64", {"the BPF ring buffer (Linux 5.8)",
                                                         "bpf_ktime_get_boot_ns() (Linux 5.8)"}),
            "this kernel (5.4.0-1-amd64) lacks what netmon needs: the BPF ring buffer (Linux "
            "5.8); bpf_ktime_get_boot_ns() (Linux 5.8). netmon supports Linux 5.10 and newer, "
            "built with BTF");
}

TEST(OptionsParse, BadHookVariantNamesTheFlag) {
  const std::string e = error_of({"--hook-variant=kprobe"});
  EXPECT_TRUE(contains(e, "--hook-variant")) << e;
  EXPECT_TRUE(contains(e, "'kprobe'")) << e;
}

TEST(OptionsParse, RingBufferBytesMustBePowerOfTwo) {
  const std::string e = error_of({"--ring-buffer-bytes=12288"});
  EXPECT_TRUE(contains(e, "--ring-buffer-bytes")) << e;
  EXPECT_TRUE(contains(e, "power of two")) << e;
}

TEST(OptionsParse, RingBufferBytesRange) {
  EXPECT_TRUE(parse({"--ring-buffer-bytes=4096"}));
  EXPECT_TRUE(parse({"--ring-buffer-bytes=1073741824"}));
  EXPECT_TRUE(contains(error_of({"--ring-buffer-bytes=2048"}), "out of range"));
  EXPECT_TRUE(contains(error_of({"--ring-buffer-bytes=2147483648"}), "out of range"));
}

TEST(OptionsParse, MaxConnectionsRange) {
  EXPECT_EQ(parse({"--max-connections=1024"})->probe.max_connections, 1024u);
  EXPECT_EQ(parse({"--max-connections=16777216"})->probe.max_connections, 16777216u);
  const std::string e = error_of({"--max-connections=1023"});
  EXPECT_TRUE(contains(e, "--max-connections")) << e;
  EXPECT_TRUE(contains(e, "out of range")) << e;
  EXPECT_TRUE(contains(error_of({"--max-connections=16777217"}), "out of range"));
}

TEST(OptionsParse, OutputQueueBytesRange) {
  EXPECT_EQ(parse({"--output-queue-bytes=65536"})->output_queue_bytes, 65536u);
  EXPECT_EQ(parse({"--output-queue-bytes=4294967296"})->output_queue_bytes, 4294967296u);
  EXPECT_TRUE(contains(error_of({"--output-queue-bytes=65535"}), "out of range"));
  EXPECT_TRUE(contains(error_of({"--output-queue-bytes=4294967297"}), "out of range"));
}

TEST(OptionsParse, NonNumericAndNegativeNumbersAreRejected) {
  for (const char* v : {"-1", "12abc", "", " 2048", "0x1000", "99999999999999999999999"}) {
    const std::string e = error_of({std::string("--max-connections=") + v});
    EXPECT_TRUE(contains(e, "not a non-negative integer")) << v << ": " << e;
  }
}

TEST(OptionsParse, HelpAndVersionSwitches) {
  const auto help = parse({"--help"});
  ASSERT_TRUE(help) << help.error().message;
  EXPECT_TRUE(help->show_help);
  EXPECT_FALSE(help->show_version);
  const auto version = parse({"--version"});
  ASSERT_TRUE(version) << version.error().message;
  EXPECT_TRUE(version->show_version);
  EXPECT_FALSE(version->show_help);
}

TEST(OptionsParse, SwitchWithValueIsRejected) {
  const std::string e = error_of({"--help=yes"});
  EXPECT_TRUE(contains(e, "--help")) << e;
  EXPECT_TRUE(contains(e, "takes no value")) << e;
}

TEST(OptionsParse, SwitchDoesNotConsumeNextArgument) {
  const auto r = parse({"--version", "--log-level=debug"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->show_version);
  EXPECT_EQ(r->log_level, log::Level::kDebug);
}

TEST(OptionsUsage, MentionsEveryFlagAndVariable) {
  const std::string u = usage_text();
  for (const char* flag : {"--config FILE",
                           "--log-level LEVEL",
                           "--hook-variant VARIANT",
                           "--ring-buffer-bytes BYTES",
                           "--max-connections N",
                           "--output-queue-bytes BYTES",
                           "--proc-root DIR",
                           "--max-processes N",
                           "--kubelet-url URL",
                           "--kubelet-token-file FILE",
                           "--kubelet-ca-file FILE",
                           "--kubelet-insecure-skip-verify[=BOOL]",
                           "--kubelet-poll-interval SECONDS",
                           "--pod-grace-period SECONDS",
                           "--pod-labels[=BOOL]",
                           "--node-name NAME",
                           "--cgroup-root DIR",
                           "--metrics-address HOST:PORT",
                           "--metrics-drop-labels LABELS",
                           "--events-establish[=BOOL]",
                           "--events-accept[=BOOL]",
                           "--events-close[=BOOL]",
                           "--events-failed[=BOOL]",
                           "--kube-api-url URL",
                           "--kube-api-token-file FILE",
                           "--kube-api-ca-file FILE",
                           "--kube-api-insecure-skip-verify[=BOOL]",
                           "--kube-api-allow-http-token[=BOOL]",
                           "--watch-pods[=BOOL]",
                           "--peer-labels[=BOOL]",
                           "--external-networks CLASSES",
                           "--print-config",
                           "--help",
                           "--version"}) {
    EXPECT_TRUE(contains(u, flag)) << flag;
  }
  for (const char* var : {"NETMON_CONFIG",
                          "NETMON_LOG_LEVEL",
                          "NETMON_HOOK_VARIANT",
                          "NETMON_RING_BUFFER_BYTES",
                          "NETMON_MAX_CONNECTIONS",
                          "NETMON_OUTPUT_QUEUE_BYTES",
                          "NETMON_PROC_ROOT",
                          "NETMON_MAX_PROCESSES",
                          "NETMON_KUBELET_URL",
                          "NETMON_KUBELET_TOKEN_FILE",
                          "NETMON_KUBELET_CA_FILE",
                          "NETMON_KUBELET_INSECURE_SKIP_VERIFY",
                          "NETMON_KUBELET_POLL_INTERVAL",
                          "NETMON_POD_GRACE_PERIOD",
                          "NETMON_POD_LABELS",
                          "NETMON_NODE_NAME",
                          "NETMON_CGROUP_ROOT",
                          "NETMON_METRICS_ADDRESS",
                          "NETMON_METRICS_DROP_LABELS",
                          "NETMON_EVENTS_ESTABLISH",
                          "NETMON_EVENTS_ACCEPT",
                          "NETMON_EVENTS_CLOSE",
                          "NETMON_EVENTS_FAILED",
                          "NETMON_KUBE_API_URL",
                          "NETMON_KUBE_API_TOKEN_FILE",
                          "NETMON_KUBE_API_CA_FILE",
                          "NETMON_KUBE_API_INSECURE_SKIP_VERIFY",
                          "NETMON_KUBE_API_ALLOW_HTTP_TOKEN",
                          "NETMON_WATCH_PODS",
                          "NETMON_PEER_LABELS",
                          "NETMON_EXTERNAL_NETWORKS"}) {
    EXPECT_TRUE(contains(u, var)) << var;
  }
}

TEST(OptionsUsage, NamesEveryConfigurationKeyAndDefault) {
  // The help is wrapped; compare it with its line breaks and indentation collapsed.
  std::string u;
  for (char c : usage_text()) {
    if (c == '\n') c = ' ';
    if (c == ' ' && !u.empty() && u.back() == ' ') continue;
    u += c;
  }
  for (const char* key : {"key log_level",
                          "key hook_variant",
                          "key ring_buffer_bytes",
                          "key max_connections",
                          "key output.queue_bytes",
                          "key process_table.proc_root",
                          "key process_table.max_processes",
                          "key kubernetes.kubelet_url",
                          "key kubernetes.token_file",
                          "key kubernetes.ca_file",
                          "key kubernetes.insecure_skip_verify",
                          "key kubernetes.poll_interval_seconds",
                          "key kubernetes.pod_grace_period_seconds",
                          "key kubernetes.labels",
                          "key kubernetes.node_name",
                          "key kubernetes.cgroup_root",
                          "key metrics.address",
                          "key metrics.drop_labels",
                          "key events.establish",
                          "key events.accept",
                          "key events.close",
                          "key events.failed",
                          "key output.max_pause_ms",
                          "key kubernetes.api_url",
                          "key kubernetes.api_token_file",
                          "key kubernetes.api_ca_file",
                          "key kubernetes.api_insecure_skip_verify",
                          "key kubernetes.api_allow_http_token",
                          "key kubernetes.watch_pods",
                          "key kubernetes.peer_labels",
                          "key kubernetes.external_networks"}) {
    EXPECT_TRUE(contains(u, key)) << key;
  }
  for (const char* d :
       {"(default info)", "(default auto)", "(default 4194304)", "(default 262144)",
        "(default 8388608)", "(default 1000)", "(default /proc)", "(default 65536)", "(default 10)",
        "(default 60)", "(default 0.0.0.0:9477)", "(default false)", "(default true)"}) {
    EXPECT_TRUE(contains(u, d)) << d;
  }
  EXPECT_TRUE(contains(u, "Flags override variables, which override the file")) << u;
}

TEST(OptionsUsage, NoLineIsWiderThanOneHundredColumns) {
  const std::string u = usage_text();
  size_t start = 0;
  while (start < u.size()) {
    const size_t end = u.find('\n', start);
    EXPECT_LE(end - start, 100u) << u.substr(start, end - start);
    start = end + 1;
  }
}

TEST(OptionsUsage, EveryLineEndsWithNewline) {
  const std::string u = usage_text();
  ASSERT_FALSE(u.empty());
  EXPECT_EQ(u.back(), '\n');
  EXPECT_TRUE(u.starts_with("Usage: netmon-agent"));
}

TEST(OptionsParse, BooleanFlagsTakeAnOptionalInlineValue) {
  EXPECT_TRUE(parse({"--kubelet-insecure-skip-verify"})->kubelet_insecure_skip_verify);
  EXPECT_TRUE(parse({"--kubelet-insecure-skip-verify=true"})->kubelet_insecure_skip_verify);
  EXPECT_FALSE(parse({"--kubelet-insecure-skip-verify=false"})->kubelet_insecure_skip_verify);
  EXPECT_FALSE(parse({"--pod-labels=false"})->pod_labels);
  EXPECT_FALSE(parse({"--pod-labels=0"})->pod_labels);
  EXPECT_TRUE(parse({"--pod-labels=yes"})->pod_labels);
  const std::string e = error_of({"--pod-labels=maybe"});
  EXPECT_TRUE(contains(e, "invalid --pod-labels: 'maybe' is not true or false")) << e;
  // The next argument is never a boolean flag's value.
  const std::string e2 = error_of({"--pod-labels", "false"});
  EXPECT_TRUE(contains(e2, "unexpected argument 'false'")) << e2;
}

TEST(OptionsParse, QuotedArgumentsInMessagesAreCappedAndEscaped) {
  // Issue #17, fault 9: input echoed in an error is a short excerpt on one line.
  const std::string flag = "--" + std::string(100000, 'x');
  const std::string e = error_of({flag});
  EXPECT_LT(e.size(), 400u) << e.size();
  EXPECT_TRUE(contains(e, "(100002 bytes)")) << e;
  const std::string e2 = error_of({"--metrics-address=bad\nhost:1"});
  EXPECT_FALSE(contains(e2, "\n")) << e2;
  const std::string e3 = error_of({"stray\r\nX-Injected: yes"});
  EXPECT_TRUE(contains(e3, "'stray\\x0d\\x0aX-Injected: yes'")) << e3;
}

TEST(OptionsParse, EventSwitchesFromFlagsAndEnvironment) {
  const auto r = parse({"--events-establish=false", "--events-failed=false", "--events-close"},
                       {{"NETMON_EVENTS_ACCEPT", "no"}, {"NETMON_EVENTS_CLOSE", "false"}});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->events.establish);
  EXPECT_FALSE(r->events.accept);
  EXPECT_TRUE(r->events.close);  // the flag over the variable
  EXPECT_FALSE(r->events.failed);
}

TEST(OptionsParse, BooleanVariableSpellings) {
  for (const char* v : {"true", "1", "yes"}) {
    EXPECT_TRUE(
        parse({}, {{"NETMON_KUBELET_INSECURE_SKIP_VERIFY", v}})->kubelet_insecure_skip_verify)
        << v;
  }
  for (const char* v : {"false", "0", "no"}) {
    EXPECT_FALSE(parse({}, {{"NETMON_POD_LABELS", v}})->pod_labels) << v;
  }
  for (const char* v : {"", "on", "TRUE "}) {
    const std::string e = error_of({}, {{"NETMON_POD_LABELS", v}});
    EXPECT_TRUE(contains(e, "invalid NETMON_POD_LABELS: '" + std::string(v) + "'")) << e;
  }
}

TEST(OptionsParse, EmptyStringsMeanTheStartUpDefault) {
  const auto r = parse({"--kubelet-url=", "--cgroup-root="},
                       {{"NETMON_NODE_NAME", ""}, {"NETMON_KUBELET_TOKEN_FILE", ""}});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->kubelet_url, "");
  EXPECT_EQ(r->cgroup_root, "");
  EXPECT_EQ(r->node_name, "");
}

TEST(OptionsParse, KubeletUrl) {
  EXPECT_EQ(parse({"--kubelet-url=https://10.0.0.1:10250/pods"})->kubelet_url,
            "https://10.0.0.1:10250/pods");
  EXPECT_EQ(parse({"--kubelet-url", "http://[::1]:10255/pods"})->kubelet_url,
            "http://[::1]:10255/pods");
  for (const char* url : {"10.0.0.1:10250", "ftp://x/", "https://", "http:///pods"}) {
    const std::string e = error_of({std::string("--kubelet-url=") + url});
    EXPECT_TRUE(contains(e, "invalid --kubelet-url: '" + std::string(url) + "'")) << e;
  }
}

TEST(OptionsParse, MetricsAddress) {
  for (const char* a : {"0.0.0.0:9477", ":9477", "127.0.0.1:0", "[::]:9477", "[::1]:1",
                        "localhost:9477", "metrics.node-1.local:80"}) {
    const auto r = parse({std::string("--metrics-address=") + a});
    ASSERT_TRUE(r) << a << ": " << r.error().message;
    EXPECT_EQ(r->metrics_address, a);
  }
  EXPECT_EQ(parse({"--metrics-address=off"})->metrics_address, "");
  EXPECT_EQ(parse({}, {{"NETMON_METRICS_ADDRESS", ""}})->metrics_address, "");
  for (const char* a : {"9477", "999.0.0.1:9477", "1.2.3:9477", "::1:9477", "[::1]9477",
                        "[not-v6]:1", "a b:1", "-x:1", "0.0.0.0:65536", "0.0.0.0:http"}) {
    const std::string e = error_of({std::string("--metrics-address=") + a});
    EXPECT_TRUE(contains(e, "invalid --metrics-address: ")) << a << ": " << e;
  }
  EXPECT_TRUE(contains(error_of({"--metrics-address=::1:9477"}), "needs brackets"));
}

TEST(OptionsParse, MetricsDropLabels) {
  EXPECT_EQ(parse({"--metrics-drop-labels=pod,container"})->metrics_drop_labels,
            (std::vector<std::string>{"pod", "container"}));
  const std::string e = error_of({}, {{"NETMON_METRICS_DROP_LABELS", "pod,ip"}});
  EXPECT_TRUE(contains(e, "invalid NETMON_METRICS_DROP_LABELS: unknown label 'ip'")) << e;
}

TEST(OptionsParse, EdgeSettings) {
  const auto d = parse({});
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->edges.enabled);
  EXPECT_EQ(d->edges.max_edges, 1000u);
  EXPECT_EQ(d->edges.idle_seconds, 900u);
  EXPECT_EQ(d->edges.ports.size(), kDefaultEdgePorts.size());
  EXPECT_TRUE(d->edges.host_workload);
  const auto r =
      parse({"--metrics-edges=false", "--metrics-max-edges=5", "--metrics-edge-idle-seconds", "30",
             "--metrics-edge-ports= 80, 8080", "--metrics-edge-host-workload=false"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->edges.enabled);
  EXPECT_EQ(r->edges.max_edges, 5u);
  EXPECT_EQ(r->edges.idle_seconds, 30u);
  EXPECT_EQ(r->edges.ports, (std::vector<uint16_t>{80, 8080}));
  EXPECT_FALSE(r->edges.host_workload);
  EXPECT_TRUE(parse({"--metrics-edge-ports="})->edges.ports.empty());
  EXPECT_TRUE(contains(error_of({"--metrics-max-edges=0"}), "out of range [1, 100000]"));
  EXPECT_TRUE(contains(error_of({"--metrics-edge-idle-seconds=86401"}), "out of range [1, 86400]"));
  const std::string e = error_of({}, {{"NETMON_METRICS_EDGE_PORTS", "80,http"}});
  EXPECT_TRUE(contains(e, "invalid NETMON_METRICS_EDGE_PORTS: 'http' is not a TCP port")) << e;
  EXPECT_TRUE(contains(error_of({"--metrics-edge-ports=0"}), "'0' is not a TCP port"));
  EXPECT_TRUE(contains(error_of({"--metrics-edge-ports=65536"}), "'65536' is not a TCP port"));
}

TEST(OptionsParse, KubeletNumbers) {
  const auto r = parse({"--kubelet-poll-interval=3600", "--pod-grace-period", "0"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->kubelet_poll_interval_s, 3600u);
  EXPECT_EQ(r->pod_grace_period_s, 0u);
  EXPECT_TRUE(contains(error_of({"--kubelet-poll-interval=0"}), "out of range [1, 3600]"));
  EXPECT_TRUE(contains(error_of({"--pod-grace-period=86401"}), "out of range [0, 86400]"));
}

TEST(OptionsParse, PrintConfigAndConfigFlags) {
  const auto r = parse({"--print-config"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->print_config);
  EXPECT_FALSE(r->show_help);
  const std::string e = error_of({"--config"});
  EXPECT_TRUE(contains(e, "--config needs a value (FILE)")) << e;
}

// The API server and the peers' settings (#19).

TEST(OptionsParse, KubeApiSettingsFromFlags) {
  const auto r =
      parse({"--kube-api-url=https://10.96.0.1:443", "--kube-api-token-file", "/var/run/api-token",
             "--kube-api-ca-file=/var/run/api-ca.crt", "--kube-api-insecure-skip-verify",
             "--kube-api-allow-http-token=true", "--watch-pods", "--peer-labels=yes"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->kube_api_url, "https://10.96.0.1:443");
  EXPECT_EQ(r->kube_api_token_file, "/var/run/api-token");
  EXPECT_EQ(r->kube_api_ca_file, "/var/run/api-ca.crt");
  EXPECT_TRUE(r->kube_api_insecure_skip_verify);
  EXPECT_TRUE(r->kube_api_allow_http_token);
  EXPECT_TRUE(r->watch_pods);
  EXPECT_TRUE(r->peer_labels);
  // A boolean flag never takes the next argument as its value.
  const auto off = parse({"--watch-pods=false", "--peer-labels=0"});
  ASSERT_TRUE(off) << off.error().message;
  EXPECT_FALSE(off->watch_pods);
  EXPECT_FALSE(off->peer_labels);
}

TEST(OptionsParse, KubeApiSettingsFromTheEnvironment) {
  const auto r = parse({}, {{"NETMON_KUBE_API_URL", "https://[fd00::1]:6443/"},
                            {"NETMON_KUBE_API_TOKEN_FILE", "/t"},
                            {"NETMON_KUBE_API_CA_FILE", "/c"},
                            {"NETMON_KUBE_API_INSECURE_SKIP_VERIFY", "1"},
                            {"NETMON_KUBE_API_ALLOW_HTTP_TOKEN", "yes"},
                            {"NETMON_WATCH_PODS", "true"},
                            {"NETMON_PEER_LABELS", "true"},
                            {"NETMON_EXTERNAL_NETWORKS", "private=10.0.0.0/8"}});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->kube_api_url, "https://[fd00::1]:6443/");
  EXPECT_EQ(r->kube_api_token_file, "/t");
  EXPECT_EQ(r->kube_api_ca_file, "/c");
  EXPECT_TRUE(r->kube_api_insecure_skip_verify);
  EXPECT_TRUE(r->kube_api_allow_http_token);
  EXPECT_TRUE(r->watch_pods);
  EXPECT_TRUE(r->peer_labels);
  ASSERT_EQ(r->external_networks.size(), 1u);
  EXPECT_EQ(r->external_networks[0].first, "private");
  // The flags beat the variables, a bad variable hidden behind its flag included.
  const auto flags = parse({"--kube-api-url=https://api:6443", "--watch-pods=false",
                            "--external-networks=a=192.168.0.0/16"},
                           {{"NETMON_KUBE_API_URL", "https://x/with/a/path"},
                            {"NETMON_WATCH_PODS", "true"},
                            {"NETMON_EXTERNAL_NETWORKS", "b=10.0.0.0/8"}});
  ASSERT_TRUE(flags) << flags.error().message;
  EXPECT_EQ(flags->kube_api_url, "https://api:6443");
  EXPECT_FALSE(flags->watch_pods);
  ASSERT_EQ(flags->external_networks.size(), 1u);
  EXPECT_EQ(flags->external_networks[0].first, "a");
  const std::string e = error_of({}, {{"NETMON_WATCH_PODS", "sometimes"}});
  EXPECT_EQ(e, "invalid NETMON_WATCH_PODS: 'sometimes' is not true or false");
}

TEST(OptionsParse, KubeApiUrl) {
  for (const char* url : {"https://10.96.0.1:443", "https://kubernetes.default.svc",
                          "http://127.0.0.1:8080", "https://[::1]:6443", "https://api:6443/"}) {
    const auto r = parse({std::string("--kube-api-url=") + url});
    ASSERT_TRUE(r) << url << ": " << r.error().message;
    EXPECT_EQ(r->kube_api_url, url);
  }
  EXPECT_EQ(parse({"--kube-api-url="})->kube_api_url, "");  // the in-cluster default
  const std::pair<const char*, const char*> bad[] = {
      {"10.96.0.1:443", "has no scheme"},
      {"ftp://api:21", "scheme 'ftp' is not https or http"},
      {"https://api:6443/api/v1", "has a path; give the API server as scheme://host:port"},
      {"https://", "has no valid host"},
      {"https://api:http", "has an invalid port"},
      {"https://fd00::1:6443", "an IPv6 address must be in brackets"},
      {"https://[fd00::1", "has an unclosed '['"},
  };
  for (const auto& [url, why] : bad) {
    const std::string e = error_of({std::string("--kube-api-url=") + url});
    EXPECT_TRUE(contains(e, "invalid --kube-api-url: ")) << url << ": " << e;
    EXPECT_TRUE(contains(e, why)) << url << ": " << e;
    const std::string env = error_of({}, {{"NETMON_KUBE_API_URL", url}});
    EXPECT_TRUE(contains(env, "invalid NETMON_KUBE_API_URL: ")) << url << ": " << env;
  }
}

TEST(OptionsParse, ExternalNetworksKeepTheirOrder) {
  const auto r = parse({"--external-networks",
                        " zeta = 10.0.0.0/8 , 192.168.0.0/16;metadata=169.254.169.254/32;"
                        "v6=fd00::/8,2001:db8::1;none="});
  ASSERT_TRUE(r) << r.error().message;
  using Classes = std::vector<std::pair<std::string, std::vector<std::string>>>;
  EXPECT_EQ(r->external_networks, (Classes{{"zeta", {"10.0.0.0/8", "192.168.0.0/16"}},
                                           {"metadata", {"169.254.169.254/32"}},
                                           {"v6", {"fd00::/8", "2001:db8::1"}},
                                           {"none", {}}}));
  EXPECT_TRUE(parse({"--external-networks="})->external_networks.empty());
  EXPECT_TRUE(parse({}, {{"NETMON_EXTERNAL_NETWORKS", "  "}})->external_networks.empty());
}

TEST(OptionsParse, BadExternalNetworksNameTheFlagAndTheCidr) {
  const std::pair<const char*, const char*> bad[] = {
      {"private=10.0.0.1/8",
       "external network class 'private': '10.0.0.1/8' is not a CIDR: address bits past the /8 "
       "prefix are not zero"},
      {"a=10.0.0.0/8;b=10.0.0.0/33", "class 'b': '10.0.0.0/33' is not a CIDR"},
      {"a=not-an-address", "'not-an-address' is not a CIDR: not an IP address"},
      {"a=10.0.0.0/8;a=192.168.0.0/16", "the name 'a' is given twice"},
      {"=10.0.0.0/8", "has an empty name"},
      {"10.0.0.0/8", "the entry '10.0.0.0/8' is not NAME=ITEM,ITEM"},
      {"a=10.0.0.0/8;", "the entry '' is not NAME=ITEM,ITEM"},
      {"a=10.0.0.0/8,,192.168.0.0/16", "has an empty item"},
      {"my net=10.0.0.0/8", "the class name 'my net' is not 1 to 63 letters"},
      {"a,b=10.0.0.0/8", "the class name 'a,b' is not"},
      {"\xc3\xa9t\xc3\xa9=10.0.0.0/8", "is not 1 to 63 letters"},
  };
  for (const auto& [text, why] : bad) {
    const std::string e = error_of({std::string("--external-networks=") + text});
    EXPECT_TRUE(contains(e, "invalid --external-networks: ")) << text << ": " << e;
    EXPECT_TRUE(contains(e, why)) << text << ": " << e;
    const std::string env = error_of({}, {{"NETMON_EXTERNAL_NETWORKS", text}});
    EXPECT_TRUE(contains(env, "invalid NETMON_EXTERNAL_NETWORKS: ")) << text << ": " << env;
  }
  EXPECT_TRUE(contains(error_of({"--external-networks=" + std::string(64, 'n') + "=10.0.0.0/8"}),
                       "is not 1 to 63 letters"));
  EXPECT_TRUE(parse({"--external-networks=" + std::string(63, 'n') + "=10.0.0.0/8"}));
}

TEST(OptionsParse, ExternalNetworksAreBounded) {
  // 64 classes and 4096 CIDRs in all are accepted; one more of either is refused.
  auto classes = [](size_t count, size_t cidrs_each) {
    std::string text;
    for (size_t c = 0; c < count; ++c) {
      text += (c ? ";c" : "c") + std::to_string(c) + "=";
      for (size_t i = 0; i < cidrs_each; ++i) {
        const size_t n = c * cidrs_each + i;
        text +=
            (i ? ",10." : "10.") + std::to_string(n >> 8) + "." + std::to_string(n & 255) + ".0/24";
      }
    }
    return text;
  };
  const auto most = parse({"--external-networks=" + classes(64, 64)});
  ASSERT_TRUE(most) << most.error().message;
  EXPECT_EQ(most->external_networks.size(), 64u);
  EXPECT_EQ(most->external_networks[63].second.size(), 64u);
  EXPECT_EQ(most->external_networks[63].second.back(), "10.15.255.0/24");
  EXPECT_TRUE(contains(error_of({"--external-networks=" + classes(65, 1)}),
                       "invalid --external-networks: 65 classes; at most 64 are allowed"));
  EXPECT_TRUE(parse({"--external-networks=" + classes(1, 4096)}));
  EXPECT_TRUE(contains(error_of({"--external-networks=" + classes(1, 4097)}),
                       "4097 CIDRs; at most 4096 are allowed in all classes"));
  EXPECT_TRUE(
      contains(error_of({"--external-networks=" + classes(2, 2049)}), "4098 CIDRs; at most 4096"));
}

TEST(OptionsEnvironment, ReadsRealEnvironment) {
  setenv("NETMON_UNIT_TEST_PROBE", "value-1", 1);
  const EnvLookup env = process_environment();
  EXPECT_EQ(env("NETMON_UNIT_TEST_PROBE"), std::optional<std::string>("value-1"));
  unsetenv("NETMON_UNIT_TEST_PROBE");
  EXPECT_EQ(env("NETMON_UNIT_TEST_PROBE"), std::nullopt);
}

}  // namespace
}  // namespace netmon
