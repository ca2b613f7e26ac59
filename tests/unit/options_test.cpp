#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cli/options.h"

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

TEST(ParseOptions, DefaultsWithoutFlagsOrEnvironment) {
  const auto r = parse({});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->show_help);
  EXPECT_FALSE(r->show_version);
  EXPECT_EQ(r->log_level, log::Level::kInfo);
  EXPECT_EQ(r->probe.variant, HookVariant::kAuto);
  EXPECT_EQ(r->probe.ring_buffer_bytes, 8u << 20);
  EXPECT_EQ(r->probe.max_connections, 262144u);
  EXPECT_EQ(r->output_queue_bytes, size_t{64} << 20);
  EXPECT_EQ(r->proc_root, "/proc");
  EXPECT_EQ(r->max_processes, 65536u);
}

TEST(ParseOptions, LogLevelSeparateAndInlineValue) {
  for (const Args& args : {Args{"--log-level", "debug"}, Args{"--log-level=debug"}}) {
    const auto r = parse(args);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->log_level, log::Level::kDebug);
  }
  EXPECT_EQ(parse({"--log-level=warn"})->log_level, log::Level::kWarn);
  EXPECT_EQ(parse({"--log-level", "error"})->log_level, log::Level::kError);
  EXPECT_EQ(parse({"--log-level", "warning"})->log_level, log::Level::kWarn);
}

TEST(ParseOptions, HookVariantSeparateAndInlineValue) {
  for (const Args& args :
       {Args{"--hook-variant", "tracepoint"}, Args{"--hook-variant=tracepoint"}}) {
    const auto r = parse(args);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->probe.variant, HookVariant::kTracepoint);
  }
  EXPECT_EQ(parse({"--hook-variant=tp_btf"})->probe.variant, HookVariant::kTpBtf);
}

TEST(ParseOptions, RingBufferBytesSeparateAndInlineValue) {
  for (const Args& args :
       {Args{"--ring-buffer-bytes", "65536"}, Args{"--ring-buffer-bytes=65536"}}) {
    const auto r = parse(args);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->probe.ring_buffer_bytes, 65536u);
  }
}

TEST(ParseOptions, MaxConnectionsSeparateAndInlineValue) {
  for (const Args& args : {Args{"--max-connections", "5000"}, Args{"--max-connections=5000"}}) {
    const auto r = parse(args);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->probe.max_connections, 5000u);
  }
}

TEST(ParseOptions, OutputQueueBytesSeparateAndInlineValue) {
  for (const Args& args :
       {Args{"--output-queue-bytes", "1000000"}, Args{"--output-queue-bytes=1000000"}}) {
    const auto r = parse(args);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->output_queue_bytes, 1000000u);
  }
}

TEST(ParseOptions, ProcRootSeparateAndInlineValue) {
  for (const Args& args : {Args{"--proc-root", "/host/proc"}, Args{"--proc-root=/host/proc"}}) {
    const auto r = parse(args);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->proc_root, "/host/proc");
  }
}

TEST(ParseOptions, ProcRootDropsTrailingSlashesButKeepsRoot) {
  EXPECT_EQ(parse({"--proc-root=/host/proc//"})->proc_root, "/host/proc");
  EXPECT_EQ(parse({"--proc-root=/"})->proc_root, "/");
  EXPECT_EQ(parse({"--proc-root=///"})->proc_root, "/");
}

TEST(ParseOptions, ProcRootMustBeAbsolute) {
  for (const char* v : {"proc", "", "./proc"}) {
    const std::string e = error_of({std::string("--proc-root=") + v});
    EXPECT_TRUE(contains(e, "--proc-root")) << e;
    EXPECT_TRUE(contains(e, "not an absolute path")) << e;
  }
}

TEST(ParseOptions, MaxProcessesSeparateAndInlineValue) {
  for (const Args& args : {Args{"--max-processes", "2048"}, Args{"--max-processes=2048"}}) {
    const auto r = parse(args);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->max_processes, 2048u);
  }
}

TEST(ParseOptions, MaxProcessesRange) {
  EXPECT_EQ(parse({"--max-processes=1024"})->max_processes, 1024u);
  EXPECT_EQ(parse({"--max-processes=4194304"})->max_processes, 4194304u);
  EXPECT_TRUE(contains(error_of({"--max-processes=1023"}), "out of range"));
  EXPECT_TRUE(contains(error_of({"--max-processes=4194305"}), "out of range"));
}

TEST(ParseOptions, SeveralFlagsTogether) {
  const auto r = parse({"--log-level=warn", "--max-connections", "2048", "--hook-variant=tp_btf"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->log_level, log::Level::kWarn);
  EXPECT_EQ(r->probe.max_connections, 2048u);
  EXPECT_EQ(r->probe.variant, HookVariant::kTpBtf);
}

TEST(ParseOptions, EnvironmentUsedWithoutFlags) {
  const auto r = parse({}, {{"NETMON_LOG_LEVEL", "debug"},
                            {"NETMON_HOOK_VARIANT", "tracepoint"},
                            {"NETMON_RING_BUFFER_BYTES", "1048576"},
                            {"NETMON_MAX_CONNECTIONS", "4096"},
                            {"NETMON_OUTPUT_QUEUE_BYTES", "131072"},
                            {"NETMON_PROC_ROOT", "/host/proc"},
                            {"NETMON_MAX_PROCESSES", "9999"}});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->log_level, log::Level::kDebug);
  EXPECT_EQ(r->probe.variant, HookVariant::kTracepoint);
  EXPECT_EQ(r->probe.ring_buffer_bytes, 1048576u);
  EXPECT_EQ(r->probe.max_connections, 4096u);
  EXPECT_EQ(r->output_queue_bytes, 131072u);
  EXPECT_EQ(r->proc_root, "/host/proc");
  EXPECT_EQ(r->max_processes, 9999u);
}

TEST(ParseOptions, FlagBeatsEnvironment) {
  const auto r = parse({"--log-level=error", "--max-connections", "8192"},
                       {{"NETMON_LOG_LEVEL", "debug"}, {"NETMON_MAX_CONNECTIONS", "4096"}});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->log_level, log::Level::kError);
  EXPECT_EQ(r->probe.max_connections, 8192u);
}

TEST(ParseOptions, LaterFlagBeatsEarlier) {
  const auto r = parse({"--log-level=error", "--log-level=debug"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->log_level, log::Level::kDebug);
}

TEST(ParseOptions, InvalidEnvironmentValueNamesTheVariable) {
  const std::string e = error_of({}, {{"NETMON_MAX_CONNECTIONS", "lots"}});
  EXPECT_TRUE(contains(e, "NETMON_MAX_CONNECTIONS")) << e;
  EXPECT_TRUE(contains(e, "'lots'")) << e;
}

TEST(ParseOptions, UnknownFlagErrorNamesIt) {
  const std::string e = error_of({"--frobnicate"});
  EXPECT_TRUE(contains(e, "--frobnicate")) << e;
  const std::string e2 = error_of({"--frobnicate=3"});
  EXPECT_TRUE(contains(e2, "--frobnicate")) << e2;
  EXPECT_FALSE(contains(e2, "=3")) << e2;
}

TEST(ParseOptions, PositionalArgumentIsRejected) {
  const std::string e = error_of({"-h"});
  EXPECT_TRUE(contains(e, "'-h'")) << e;
  EXPECT_FALSE(parse({"extra"}));
}

TEST(ParseOptions, MissingValueNamesFlagAndValue) {
  const std::string e = error_of({"--max-connections"});
  EXPECT_TRUE(contains(e, "--max-connections")) << e;
  EXPECT_TRUE(contains(e, "needs a value")) << e;
  EXPECT_TRUE(contains(e, "N")) << e;
}

TEST(ParseOptions, BadLogLevelNamesTheFlag) {
  const std::string e = error_of({"--log-level", "loud"});
  EXPECT_TRUE(contains(e, "--log-level")) << e;
  EXPECT_TRUE(contains(e, "'loud'")) << e;
}

TEST(ParseOptions, EmptyInlineValueIsInvalid) {
  const std::string e = error_of({"--log-level="});
  EXPECT_TRUE(contains(e, "--log-level")) << e;
}

TEST(ParseOptions, BadHookVariantNamesTheFlag) {
  const std::string e = error_of({"--hook-variant=kprobe"});
  EXPECT_TRUE(contains(e, "--hook-variant")) << e;
  EXPECT_TRUE(contains(e, "'kprobe'")) << e;
}

TEST(ParseOptions, RingBufferBytesMustBePowerOfTwo) {
  const std::string e = error_of({"--ring-buffer-bytes=12288"});
  EXPECT_TRUE(contains(e, "--ring-buffer-bytes")) << e;
  EXPECT_TRUE(contains(e, "power of two")) << e;
}

TEST(ParseOptions, RingBufferBytesRange) {
  EXPECT_TRUE(parse({"--ring-buffer-bytes=4096"}));
  EXPECT_TRUE(parse({"--ring-buffer-bytes=1073741824"}));
  EXPECT_TRUE(contains(error_of({"--ring-buffer-bytes=2048"}), "out of range"));
  EXPECT_TRUE(contains(error_of({"--ring-buffer-bytes=2147483648"}), "out of range"));
}

TEST(ParseOptions, MaxConnectionsRange) {
  EXPECT_EQ(parse({"--max-connections=1024"})->probe.max_connections, 1024u);
  EXPECT_EQ(parse({"--max-connections=16777216"})->probe.max_connections, 16777216u);
  const std::string e = error_of({"--max-connections=1023"});
  EXPECT_TRUE(contains(e, "--max-connections")) << e;
  EXPECT_TRUE(contains(e, "out of range")) << e;
  EXPECT_TRUE(contains(error_of({"--max-connections=16777217"}), "out of range"));
}

TEST(ParseOptions, OutputQueueBytesRange) {
  EXPECT_EQ(parse({"--output-queue-bytes=65536"})->output_queue_bytes, 65536u);
  EXPECT_EQ(parse({"--output-queue-bytes=4294967296"})->output_queue_bytes, 4294967296u);
  EXPECT_TRUE(contains(error_of({"--output-queue-bytes=65535"}), "out of range"));
  EXPECT_TRUE(contains(error_of({"--output-queue-bytes=4294967297"}), "out of range"));
}

TEST(ParseOptions, NonNumericAndNegativeNumbersAreRejected) {
  for (const char* v : {"-1", "12abc", "", " 2048", "0x1000", "99999999999999999999999"}) {
    const std::string e = error_of({std::string("--max-connections=") + v});
    EXPECT_TRUE(contains(e, "not a non-negative integer")) << v << ": " << e;
  }
}

TEST(ParseOptions, HelpAndVersionSwitches) {
  const auto help = parse({"--help"});
  ASSERT_TRUE(help) << help.error().message;
  EXPECT_TRUE(help->show_help);
  EXPECT_FALSE(help->show_version);
  const auto version = parse({"--version"});
  ASSERT_TRUE(version) << version.error().message;
  EXPECT_TRUE(version->show_version);
  EXPECT_FALSE(version->show_help);
}

TEST(ParseOptions, SwitchWithValueIsRejected) {
  const std::string e = error_of({"--help=yes"});
  EXPECT_TRUE(contains(e, "--help")) << e;
  EXPECT_TRUE(contains(e, "takes no value")) << e;
}

TEST(ParseOptions, SwitchDoesNotConsumeNextArgument) {
  const auto r = parse({"--version", "--log-level=debug"});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->show_version);
  EXPECT_EQ(r->log_level, log::Level::kDebug);
}

TEST(UsageText, MentionsEveryFlagAndVariable) {
  const std::string u = usage_text();
  for (const char* flag :
       {"--log-level LEVEL", "--hook-variant VARIANT", "--ring-buffer-bytes BYTES",
        "--max-connections N", "--output-queue-bytes BYTES", "--proc-root DIR", "--max-processes N",
        "--help", "--version"}) {
    EXPECT_TRUE(contains(u, flag)) << flag;
  }
  for (const char* var : {"NETMON_LOG_LEVEL", "NETMON_HOOK_VARIANT", "NETMON_RING_BUFFER_BYTES",
                          "NETMON_MAX_CONNECTIONS", "NETMON_OUTPUT_QUEUE_BYTES", "NETMON_PROC_ROOT",
                          "NETMON_MAX_PROCESSES"}) {
    EXPECT_TRUE(contains(u, var)) << var;
  }
}

TEST(UsageText, EveryLineEndsWithNewline) {
  const std::string u = usage_text();
  ASSERT_FALSE(u.empty());
  EXPECT_EQ(u.back(), '\n');
  EXPECT_TRUE(u.starts_with("Usage: netmon-agent"));
}

TEST(ProcessEnvironment, ReadsRealEnvironment) {
  setenv("NETMON_UNIT_TEST_PROBE", "value-1", 1);
  const EnvLookup env = process_environment();
  EXPECT_EQ(env("NETMON_UNIT_TEST_PROBE"), std::optional<std::string>("value-1"));
  unsetenv("NETMON_UNIT_TEST_PROBE");
  EXPECT_EQ(env("NETMON_UNIT_TEST_PROBE"), std::nullopt);
}

}  // namespace
}  // namespace netmon
