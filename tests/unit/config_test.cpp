// The YAML configuration file: every key, precedence against the environment and flags, every
// error class with its position, the rules section, and the --print-config round trip.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "cli/options.h"
#include "config/config.h"

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

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A directory for configuration files, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = ::testing::TempDir() + "netmon-config-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string write(const std::string& name, const std::string& text) const {
    const std::string file = path_ + "/" + name;
    std::ofstream(file, std::ios::binary) << text;
    return file;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Every setting and rule equal, and printed the same (defined with the --print-config tests).
void expect_same_configuration(const Options& a, const Options& b);

class ConfigTest : public ::testing::Test {
 protected:
  // Parses `yaml` as the --config file, with `args` and `env`.
  Result<Options> load(const std::string& yaml, Args args = {}, Env env = {}) {
    file_ = dir_.write("netmon.yaml", yaml);
    args.insert(args.begin(), "--config=" + file_);
    return parse_options(args, env_of(std::move(env)));
  }

  Options load_ok(const std::string& yaml, Args args = {}, Env env = {}) {
    auto r = load(yaml, std::move(args), std::move(env));
    if (!r) {
      ADD_FAILURE() << r.error().message;
      return Options{};
    }
    return *r;
  }

  // The error of a file that must fail to load, without the file name's prefix check.
  std::string error_of(const std::string& yaml, Args args = {}, Env env = {}) {
    auto r = load(yaml, std::move(args), std::move(env));
    if (r) {
      ADD_FAILURE() << "loading unexpectedly succeeded:\n" << yaml;
      return "";
    }
    return r.error().message;
  }

  // "FILE:LINE:" as the error messages start.
  std::string at_line(int line) const { return file_ + ":" + std::to_string(line) + ":"; }

  TempDir dir_;
  std::string file_;
};

constexpr const char* kEveryKey = R"(# every key, none at its default
log_level: debug
hook_variant: tracepoint
ring_buffer_bytes: 1048576
max_connections: 4096
preallocate_connections: false
output:
  queue_bytes: 131072
process_table:
  proc_root: /host/proc/
  max_processes: 2048
kubernetes:
  kubelet_url: https://10.0.0.5:10250/pods
  token_file: /var/run/token
  ca_file: /var/run/ca.crt
  insecure_skip_verify: true
  poll_interval_seconds: 30
  pod_grace_period_seconds: 120
  labels: false
  node_name: node-7
  cgroup_root: /sys/fs/cgroup
  api_url: https://10.96.0.1:443
  api_token_file: /var/run/api-token
  api_ca_file: /var/run/api-ca.crt
  api_insecure_skip_verify: true
  api_allow_http_token: true
  watch_services: false
  watch_nodes: false
  watch_pods: true
  peer_labels: true
  external_networks:
    zeta: [10.0.0.0/8, "192.168.0.0/16"]
    metadata:
    - 169.254.169.254/32
    v6: [fd00::/8]
    none: []
metrics:
  address: 127.0.0.1:9999
  drop_labels: [pod, container]
events:
  establish: false
  accept: false
  close: true
  failed: false
)";

// kEveryKey's kubernetes.external_networks, in the file's order (not sorted).
const std::vector<std::pair<std::string, std::vector<std::string>>> kEveryKeyNetworks = {
    {"zeta", {"10.0.0.0/8", "192.168.0.0/16"}},
    {"metadata", {"169.254.169.254/32"}},
    {"v6", {"fd00::/8"}},
    {"none", {}}};

TEST_F(ConfigTest, EveryKeyIsParsed) {
  const Options o = load_ok(kEveryKey);
  EXPECT_EQ(o.config_file, file_);
  EXPECT_EQ(o.log_level, log::Level::kDebug);
  EXPECT_EQ(o.probe.variants.state, HookVariant::kTracepoint);
  EXPECT_EQ(o.probe.ring_buffer_bytes, 1048576u);
  EXPECT_EQ(o.probe.max_connections, 4096u);
  EXPECT_FALSE(o.probe.preallocate_connections);
  EXPECT_EQ(o.output_queue_bytes, 131072u);
  EXPECT_EQ(o.proc_root, "/host/proc");
  EXPECT_EQ(o.max_processes, 2048u);
  EXPECT_EQ(o.kubelet_url, "https://10.0.0.5:10250/pods");
  EXPECT_EQ(o.kubelet_token_file, "/var/run/token");
  EXPECT_EQ(o.kubelet_ca_file, "/var/run/ca.crt");
  EXPECT_TRUE(o.kubelet_insecure_skip_verify);
  EXPECT_EQ(o.kubelet_poll_interval_s, 30u);
  EXPECT_EQ(o.pod_grace_period_s, 120u);
  EXPECT_FALSE(o.pod_labels);
  EXPECT_EQ(o.node_name, "node-7");
  EXPECT_EQ(o.cgroup_root, "/sys/fs/cgroup");
  EXPECT_EQ(o.metrics_address, "127.0.0.1:9999");
  EXPECT_EQ(o.metrics_drop_labels, (std::vector<std::string>{"pod", "container"}));
  EXPECT_FALSE(o.events.establish);
  EXPECT_FALSE(o.events.accept);
  EXPECT_TRUE(o.events.close);
  EXPECT_FALSE(o.events.failed);
  EXPECT_FALSE(o.print_config);
  EXPECT_EQ(o.kube_api_url, "https://10.96.0.1:443");
  EXPECT_EQ(o.kube_api_token_file, "/var/run/api-token");
  EXPECT_EQ(o.kube_api_ca_file, "/var/run/api-ca.crt");
  EXPECT_TRUE(o.kube_api_insecure_skip_verify);
  EXPECT_TRUE(o.kube_api_allow_http_token);
  EXPECT_FALSE(o.watch_services);
  EXPECT_FALSE(o.watch_nodes);
  EXPECT_TRUE(o.watch_pods);
  EXPECT_TRUE(o.peer_labels);
  EXPECT_EQ(o.external_networks, kEveryKeyNetworks);
}

TEST_F(ConfigTest, EmptyFileCommentsAndEmptySectionsKeepDefaults) {
  for (const char* yaml : {"", "# nothing\n", "---\n", "kubernetes:\nmetrics:\n",
                           "egress:\ningress:\nlists:\nmacros:\n"}) {
    const Options o = load_ok(yaml);
    EXPECT_EQ(o.log_level, log::Level::kInfo) << yaml;
    EXPECT_EQ(o.metrics_address, "0.0.0.0:9477") << yaml;
    EXPECT_TRUE(o.pod_labels) << yaml;
    EXPECT_TRUE(o.events.establish && o.events.accept && o.events.close && o.events.failed);
    EXPECT_TRUE(o.rules.egress.enabled && o.rules.ingress.enabled) << yaml;
    EXPECT_TRUE(o.rules.egress.rules.empty() && o.rules.lists.empty()) << yaml;
  }
}

TEST_F(ConfigTest, DropLabelsAsListOrCommaString) {
  EXPECT_EQ(load_ok("metrics:\n  drop_labels: pod, workload\n").metrics_drop_labels,
            (std::vector<std::string>{"pod", "workload"}));
  EXPECT_EQ(load_ok("metrics:\n  drop_labels:\n  - namespace\n  - direction\n").metrics_drop_labels,
            (std::vector<std::string>{"namespace", "direction"}));
  EXPECT_TRUE(load_ok("metrics:\n  drop_labels: []\n").metrics_drop_labels.empty());
}

TEST_F(ConfigTest, EdgeSettingsFromTheFile) {
  const Options o = load_ok(
      "metrics:\n  edges: true\n  max_edges: 50\n  edge_idle_seconds: 60\n"
      "  edge_ports: [443, 5432]\n  edge_host_workload: false\n");
  EXPECT_TRUE(o.edges.enabled);
  EXPECT_EQ(o.edges.max_edges, 50u);
  EXPECT_EQ(o.edges.idle_seconds, 60u);
  EXPECT_EQ(o.edges.ports, (std::vector<uint16_t>{443, 5432}));
  EXPECT_FALSE(o.edges.host_workload);
  EXPECT_TRUE(load_ok("metrics:\n  edge_ports: []\n").edges.ports.empty());
  EXPECT_TRUE(contains(error_of("metrics:\n  edge_ports: [443, https]\n"),
                       "metrics.edge_ports: 'https' is not a TCP port"));
  EXPECT_TRUE(contains(error_of("metrics:\n  max_edges: 0\n"), "metrics.max_edges"));
}

TEST_F(ConfigTest, EmptyStringsSelectTheStartUpDefaults) {
  const Options o = load_ok(
      "kubernetes:\n  kubelet_url: \"\"\n  token_file: ''\n  ca_file: \"\"\n  node_name: \"\"\n"
      "  cgroup_root: \"\"\nmetrics:\n  address: \"off\"\n");
  EXPECT_EQ(o.kubelet_url, "");
  EXPECT_EQ(o.cgroup_root, "");
  EXPECT_EQ(o.metrics_address, "");
}

TEST_F(ConfigTest, BooleansAcceptYamlCoreSpellings) {
  EXPECT_TRUE(load_ok("kubernetes:\n  insecure_skip_verify: True\n").kubelet_insecure_skip_verify);
  EXPECT_TRUE(load_ok("kubernetes:\n  insecure_skip_verify: TRUE\n").kubelet_insecure_skip_verify);
  EXPECT_FALSE(load_ok("events:\n  close: False\n").events.close);
  EXPECT_FALSE(load_ok("events:\n  close: FALSE\n").events.close);
}

TEST_F(ConfigTest, ScalarsMayBeQuotedWhereStringsAreExpected) {
  const Options o = load_ok("log_level: \"warn\"\nkubernetes:\n  node_name: 12345\n");
  EXPECT_EQ(o.log_level, log::Level::kWarn);
  EXPECT_EQ(o.node_name, "12345");
}

// Precedence: defaults < file < environment < flags, each pair.

TEST_F(ConfigTest, FileBeatsDefaults) {
  const Options o = load_ok("max_connections: 5000\n");
  EXPECT_EQ(o.probe.max_connections, 5000u);
  EXPECT_EQ(o.max_processes, 65536u);  // not in the file: the default
}

TEST_F(ConfigTest, EnvironmentBeatsFile) {
  const Options o = load_ok("max_connections: 5000\nkubernetes:\n  labels: false\n", {},
                            {{"NETMON_MAX_CONNECTIONS", "6000"}, {"NETMON_POD_LABELS", "true"}});
  EXPECT_EQ(o.probe.max_connections, 6000u);
  EXPECT_TRUE(o.pod_labels);
}

TEST_F(ConfigTest, FlagBeatsFile) {
  const Options o = load_ok("max_connections: 5000\nevents:\n  close: false\n",
                            {"--max-connections=7000", "--events-close"});
  EXPECT_EQ(o.probe.max_connections, 7000u);
  EXPECT_TRUE(o.events.close);
}

TEST_F(ConfigTest, FlagBeatsEnvironmentBeatsFile) {
  const Options o = load_ok(
      "log_level: error\nmax_connections: 5000\nprocess_table:\n  max_processes: 3000\n",
      {"--log-level=debug"}, {{"NETMON_LOG_LEVEL", "warn"}, {"NETMON_MAX_CONNECTIONS", "6000"}});
  EXPECT_EQ(o.log_level, log::Level::kDebug);        // flag over environment and file
  EXPECT_EQ(o.probe.max_connections, 6000u);         // environment over file
  EXPECT_EQ(o.max_processes, 3000u);                 // file over default
  EXPECT_EQ(o.output_queue_bytes, size_t{8} << 20);  // default
}

TEST_F(ConfigTest, ConfigFileFromEnvironmentAndFlagOverIt) {
  const std::string a = dir_.write("a.yaml", "max_connections: 2000\n");
  const std::string b = dir_.write("b.yaml", "max_connections: 3000\n");
  auto from_env = parse_options({}, env_of({{"NETMON_CONFIG", a}}));
  ASSERT_TRUE(from_env) << from_env.error().message;
  EXPECT_EQ(from_env->probe.max_connections, 2000u);
  EXPECT_EQ(from_env->config_file, a);
  auto from_flag = parse_options({"--config", b}, env_of({{"NETMON_CONFIG", a}}));
  ASSERT_TRUE(from_flag) << from_flag.error().message;
  EXPECT_EQ(from_flag->probe.max_connections, 3000u);
  EXPECT_EQ(from_flag->config_file, b);
}

TEST_F(ConfigTest, BadFileValueIsAnErrorEvenWhenAFlagOverridesIt) {
  const std::string e = error_of("max_connections: lots\n", {"--max-connections=4096"});
  EXPECT_TRUE(contains(e, at_line(1))) << e;
  EXPECT_TRUE(contains(e, "max_connections")) << e;
}

// Errors: each names the file, the line and the key.

TEST_F(ConfigTest, UnknownTopLevelKey) {
  const std::string e = error_of("log_level: info\nfrobnicate: 1\n");
  EXPECT_TRUE(contains(e, at_line(2) + "1: frobnicate: unknown key")) << e;
  EXPECT_TRUE(contains(e, "kubernetes")) << e;  // lists the keys there are
}

TEST_F(ConfigTest, UnknownNestedKeySuggestsTheNearestName) {
  const std::string e = error_of("kubernetes:\n  node_name: a\n  kubelet_ulr: https://x\n");
  EXPECT_TRUE(contains(e, at_line(3) + "3: kubernetes.kubelet_ulr: unknown key")) << e;
  EXPECT_TRUE(contains(e, "did you mean kubernetes.kubelet_url?")) << e;
}

TEST_F(ConfigTest, KeyInTheWrongSectionIsNamed) {
  const std::string e = error_of("kubelet_url: https://10.0.0.1:10250/pods\n");
  EXPECT_TRUE(contains(e, at_line(1) + "1: kubelet_url: unknown key")) << e;
  EXPECT_TRUE(contains(e, "did you mean kubernetes.kubelet_url?")) << e;
}

TEST_F(ConfigTest, UnknownKeyInADirectionAndInARule) {
  std::string e = error_of("egress:\n  enable: false\n");
  EXPECT_TRUE(contains(e, at_line(2) + "3: egress.enable: unknown key")) << e;
  EXPECT_TRUE(contains(e, "did you mean egress.enabled?")) << e;
  e = error_of(
      "ingress:\n  rules:\n  - rule: a\n    event: port_dst == 1\n  - rule: b\n"
      "    evnt: port_dst == 2\n");
  EXPECT_TRUE(contains(e, at_line(6) + "5: ingress.rules[1].evnt: unknown key")) << e;
  EXPECT_TRUE(contains(e, "did you mean ingress.rules[1].event?")) << e;
}

TEST_F(ConfigTest, KeyGivenTwice) {
  const std::string e = error_of("metrics:\n  address: :1\n  address: :2\n");
  EXPECT_TRUE(contains(e, at_line(3) + "3: metrics.address: given twice (first on line 2)")) << e;
  const std::string e2 = error_of("lists:\n  a: [1]\n  a: [2]\n");
  EXPECT_TRUE(contains(e2, at_line(3) + "3: lists.a: given twice")) << e2;
}

TEST_F(ConfigTest, MappingWhereAScalarIsExpected) {
  const std::string e = error_of("log_level:\n  level: debug\n");
  EXPECT_TRUE(contains(e, at_line(2) + "3: log_level: expected a string, got a mapping")) << e;
  const std::string e2 = error_of("max_connections: {a: 1}\n");
  EXPECT_TRUE(contains(e2, at_line(1) + "18: max_connections: expected a number, got a mapping"))
      << e2;
  const std::string e3 = error_of("events:\n  close: [true]\n");
  EXPECT_TRUE(contains(e3, at_line(2) + "10: events.close: expected true or false, got a list"))
      << e3;
}

TEST_F(ConfigTest, ScalarWhereASectionIsExpected) {
  const std::string e = error_of("kubernetes: https://10.0.0.1:10250/pods\n");
  EXPECT_TRUE(contains(e, at_line(1) + "13: kubernetes: expected a mapping of")) << e;
  EXPECT_TRUE(contains(e, "kubelet_url")) << e;
}

TEST_F(ConfigTest, StringForANumber) {
  std::string e = error_of("kubernetes:\n  poll_interval_seconds: \"10\"\n");
  EXPECT_TRUE(contains(e, at_line(2) + "26: kubernetes.poll_interval_seconds: expected a number, "
                                       "got the quoted string '10'"))
      << e;
  e = error_of("kubernetes:\n  poll_interval_seconds: ten\n");
  EXPECT_TRUE(contains(e, at_line(2))) << e;
  EXPECT_TRUE(contains(e, "kubernetes.poll_interval_seconds: 'ten' is not a non-negative integer"))
      << e;
  for (const char* v : {"-1", "1.5", "1e3", "0x10", "10s"}) {
    e = error_of(std::string("max_connections: ") + v + "\n");
    EXPECT_TRUE(contains(e, "max_connections: '" + std::string(v) + "' is not a non-negative"))
        << e;
  }
}

TEST_F(ConfigTest, BooleanSpellings) {
  std::string e = error_of("kubernetes:\n  labels: yes\n");
  EXPECT_TRUE(contains(e, at_line(2) + "11: kubernetes.labels: expected true or false, got 'yes'"))
      << e;
  EXPECT_TRUE(contains(e, "yes/no/on/off are not accepted")) << e;
  e = error_of("kubernetes:\n  labels: \"true\"\n");
  EXPECT_TRUE(
      contains(e, "kubernetes.labels: expected true or false, got the quoted string 'true'"))
      << e;
  e = error_of("egress:\n  enabled: 1\n");
  EXPECT_TRUE(contains(e, at_line(2) + "12: egress.enabled: expected true or false, got '1'")) << e;
}

TEST_F(ConfigTest, EmptyValueIsNotSilentlyTakenAsDefault) {
  std::string e = error_of("kubernetes:\n  node_name:\n");
  EXPECT_TRUE(contains(e, at_line(2) + "3: kubernetes.node_name: has no value")) << e;
  e = error_of("max_connections: ~\n");  // a null value is reported at its key
  EXPECT_TRUE(contains(e, at_line(1) + "1: max_connections: expected a number, got an empty")) << e;
  e = error_of("macros:\n  m: null\n");
  EXPECT_TRUE(contains(e, at_line(2) + "3: macros.m: has no value")) << e;
}

TEST_F(ConfigTest, OutOfRangeNumbers) {
  std::string e = error_of("\nprocess_table:\n  max_processes: 1023\n");
  EXPECT_TRUE(contains(e, at_line(3) + "18: process_table.max_processes: 1023 is out of range "
                                       "[1024, 4194304]"))
      << e;
  e = error_of("ring_buffer_bytes: 12288\n");
  EXPECT_TRUE(contains(e, "ring_buffer_bytes: 12288 is not a power of two")) << e;
  e = error_of("kubernetes:\n  poll_interval_seconds: 0\n");
  EXPECT_TRUE(contains(e, "kubernetes.poll_interval_seconds: 0 is out of range [1, 3600]")) << e;
  e = error_of("max_connections: 99999999999999999999999\n");
  EXPECT_TRUE(contains(e, "max_connections: '99999999999999999999999' is not a non-negative")) << e;
}

TEST_F(ConfigTest, BadAddressesAndUrls) {
  for (const char* address : {"999.1.1.1:9477", "localhost", "::1:9477", "[::1:9477",
                              "[zz::1]:9477", "0.0.0.0:70000", "host name:80"}) {
    const std::string e = error_of(std::string("metrics:\n  address: \"") + address + "\"\n");
    EXPECT_TRUE(contains(e, at_line(2) + "12: metrics.address: ")) << address << ": " << e;
  }
  for (const char* url : {"ftp://x/pods", "10.0.0.1:10250", "https://", "https:///pods"}) {
    const std::string e = error_of(std::string("kubernetes:\n  kubelet_url: ") + url + "\n");
    EXPECT_TRUE(contains(e, at_line(2) + "16: kubernetes.kubelet_url: ")) << url << ": " << e;
  }
  EXPECT_TRUE(contains(error_of("metrics:\n  drop_labels: [pod, ip]\n"),
                       "metrics.drop_labels: unknown label 'ip'"));
  EXPECT_TRUE(contains(error_of("metrics:\n  drop_labels: [pod, \"a,b\"]\n"),
                       at_line(2) + "22: metrics.drop_labels[1]: 'a,b' is not a single item"));
  EXPECT_TRUE(contains(error_of("metrics:\n  drop_labels: [[pod]]\n"),
                       "metrics.drop_labels[0]: expected a string, got a list"));
  EXPECT_TRUE(contains(error_of("log_level: loud\n"), "log_level: 'loud' is not one of"));
  EXPECT_TRUE(contains(error_of("hook_variant: kprobe\n"), "hook_variant: 'kprobe' is not one of"));
  EXPECT_TRUE(contains(error_of("process_table:\n  proc_root: proc\n"),
                       at_line(2) + "14: process_table.proc_root: 'proc' is not an absolute path"));
  EXPECT_TRUE(contains(error_of("kubernetes:\n  cgroup_root: sys/fs/cgroup\n"),
                       "kubernetes.cgroup_root: 'sys/fs/cgroup' is not an absolute path"));
}

TEST_F(ConfigTest, MalformedYamlGivesLineAndColumn) {
  std::string e = error_of("kubernetes:\n  node_name: [a, b\nlog_level: info\n");
  EXPECT_TRUE(contains(e, file_ + ":")) << e;
  EXPECT_TRUE(contains(e, "malformed YAML")) << e;
  e = error_of("log_level: info\n  bad indentation: x\n");
  EXPECT_TRUE(contains(e, at_line(2))) << e;
  EXPECT_TRUE(contains(e, "malformed YAML: ")) << e;
  e = error_of("log_level: \"bad \\q escape\"\n");
  EXPECT_TRUE(contains(e, at_line(1) + "19: malformed YAML: unknown escape character: q")) << e;
  e = error_of("log_level: info: debug\n");
  EXPECT_TRUE(contains(e, at_line(1) + "16: malformed YAML: illegal map value")) << e;
  e = error_of("log_level: *nowhere\n");
  EXPECT_TRUE(contains(e, at_line(1) + "12: malformed YAML")) << e;
}

TEST_F(ConfigTest, QuotedStringLeftOpenIsAnError) {
  // yaml-cpp reads such a string up to the end of the file, swallowing the keys after it.
  std::string e = error_of("kubernetes:\n  node_name: \"abc\nlog_level: debug\n");
  EXPECT_TRUE(contains(e, at_line(2) + "14: kubernetes.node_name: malformed YAML: the quoted "
                                       "string is not closed"))
      << e;
  e = error_of("lists:\n  a:\n  - 'x'\n  - 'it''s\n");
  EXPECT_TRUE(contains(e, at_line(4) + "5: lists.a[1]: malformed YAML: the quoted string")) << e;
  const Options o = load_ok("macros:\n  m: 'it''s'\n  n: \"a\\\"b\"\n");  // closed
  EXPECT_EQ(o.rules.macros.at("m"), "it's");
  EXPECT_EQ(o.rules.macros.at("n"), "a\"b");
}

TEST_F(ConfigTest, DocumentMustBeOneMapping) {
  std::string e = error_of("- log_level\n- info\n");
  EXPECT_TRUE(contains(e, at_line(1) + "1: the configuration must be a mapping")) << e;
  // A scalar document is no configuration at all: nothing of it is quoted.
  e = error_of("just text\n");
  EXPECT_TRUE(contains(e, "must be a mapping of keys, got a scalar")) << e;
  EXPECT_FALSE(contains(e, "just text")) << e;
  e = error_of("log_level: info\n---\nlog_level: debug\n");
  EXPECT_TRUE(contains(e, at_line(2) + "1: more than one YAML document")) << e;
  e = error_of("log_level: info\n---\n");
  EXPECT_TRUE(contains(e, at_line(2) + "1: more than one YAML document")) << e;
  EXPECT_EQ(load_ok("---\nlog_level: warn\n...\n").log_level, log::Level::kWarn);
  // yaml-cpp 0.7 alone loops forever on these.
  e = error_of(",\nlog_level: debug\n");
  EXPECT_TRUE(contains(e, at_line(1) + "1: malformed YAML: unexpected ','")) << e;
  e = error_of("log_level: info\n---\n,");
  EXPECT_TRUE(contains(e, at_line(2) + "1: more than one YAML document")) << e;
  e = error_of("? [a, b]\n: 1\n");
  EXPECT_TRUE(contains(e, "keys must be names, got a list")) << e;
}

TEST_F(ConfigTest, SpecialFilesAreRefusedAtOnce) {
  // A FIFO would block the start until a writer came; /dev/zero would fill memory.
  const std::string fifo = dir_.path() + "/fifo.yaml";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto r = parse_options({"--config", fifo}, env_of({}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message,
            "cannot read the configuration file " + fifo + ": not a regular file (a FIFO)");
  r = parse_options({"--config", "/dev/zero"}, env_of({}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message,
            "cannot read the configuration file /dev/zero: not a regular file (a character "
            "device)");
  const std::string big = dir_.write("big.yaml", "# " + std::string(16u << 20, 'x') + "\n");
  r = parse_options({"--config", big}, env_of({}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message,
            "cannot read the configuration file " + big + ": larger than 16777216 bytes");
}

TEST_F(ConfigTest, AFileThatIsNoConfigurationIsNotQuoted) {
  // /etc/shadow: its lines end in ":", so YAML reads the first one as a key; a key that is not
  // a name is not quoted.
  const std::string shadow =
      "root:$y$j9T$Q6pFhm1BWX9ZA/E8U8X5b.$Uu0rM5fJ3OIVjz7Vb:19700:0:99999:7:::\n"
      "daemon:*:19700:0:99999:7:::\n";
  std::string e = error_of(shadow);
  EXPECT_TRUE(contains(e, at_line(1) + "1: (a key of 70 bytes that is not a name): unknown key"))
      << e;
  EXPECT_FALSE(contains(e, "root")) << e;
  EXPECT_FALSE(contains(e, "j9T")) << e;
  // /etc/passwd's lines are scalars: nothing of a scalar document is quoted.
  e = error_of("root:x:0:0:root:/root:/bin/bash\n");
  EXPECT_EQ(e, at_line(1) + "1: the configuration must be a mapping of keys, got a scalar");
}

TEST_F(ConfigTest, QuotedInputInMessagesIsCapped) {
  const std::string huge(1u << 20, 'k');
  // An unknown key of 1000 bytes (YAML's longest simple key: 1024).
  std::string e = error_of(std::string(1000, 'k') + ": 1\n");
  EXPECT_LT(e.size(), 1000u);
  EXPECT_TRUE(contains(e, "1: (a key of 1000 bytes that is not a name): unknown key")) << e;
  e = error_of("kubernetes:\n  labels: " + huge + "\n");  // a bool of 1 MiB
  EXPECT_LT(e.size(), 1000u);
  EXPECT_TRUE(contains(e, "kubernetes.labels: expected true or false, got 'kkkk")) << e;
  EXPECT_TRUE(contains(e, "...' (1048576 bytes)")) << e;
  e = error_of("max_connections: \"" + huge + "\"\n");
  EXPECT_LT(e.size(), 1000u);
  e = error_of("metrics:\n  drop_labels: [\"" + huge + ",\"]\n");
  EXPECT_LT(e.size(), 1000u);
  e = error_of("log_level:\n  - " + huge + "\n");
  EXPECT_LT(e.size(), 1000u);
  // A control character in a key cannot start a new log line.
  e = error_of("\"a\\nb\": 1\n");
  EXPECT_FALSE(contains(e, "\n")) << e;
}

TEST_F(ConfigTest, MissingUnreadableOrEmptyFileName) {
  const std::string missing = dir_.path() + "/missing.yaml";
  auto r = parse_options({"--config", missing}, env_of({}));
  ASSERT_FALSE(r);
  EXPECT_TRUE(contains(r.error().message,
                       "cannot read the configuration file " + missing + ": No such file"))
      << r.error().message;
  r = parse_options({}, env_of({{"NETMON_CONFIG", dir_.path()}}));
  ASSERT_FALSE(r);
  EXPECT_TRUE(contains(r.error().message, dir_.path() + ": Is a directory")) << r.error().message;
  r = parse_options({"--config="}, env_of({}));
  ASSERT_FALSE(r);
  EXPECT_TRUE(contains(r.error().message, "invalid --config: the file name is empty"));
  r = parse_options({}, env_of({{"NETMON_CONFIG", ""}}));
  ASSERT_FALSE(r);
  EXPECT_TRUE(contains(r.error().message, "invalid NETMON_CONFIG: the file name is empty"));
  EXPECT_TRUE(contains(parse_options({"--config"}, env_of({})).error().message,
                       "--config needs a value (FILE)"));
  if (::geteuid() != 0) {  // root reads anything
    const std::string locked = dir_.write("locked.yaml", "log_level: info\n");
    ::chmod(locked.c_str(), 0);
    r = parse_options({"--config", locked}, env_of({}));
    ASSERT_FALSE(r);
    EXPECT_TRUE(contains(r.error().message, locked + ": Permission denied")) << r.error().message;
  }
}

TEST_F(ConfigTest, TextMustBeUtf8WithoutRawControlCharacters) {
  std::string e = error_of("log_level: info\nkubernetes:\n  node_name: ab\xff\n");
  EXPECT_TRUE(contains(e, at_line(3) + "16: malformed YAML: invalid UTF-8")) << e;
  e = error_of("kubernetes:\n  node_name: a\x01z\n");
  EXPECT_TRUE(contains(e, at_line(2) + "15: malformed YAML: the control character U+0001, "
                                       "which YAML allows only escaped"))
      << e;
  e = error_of("\xff\xfel\0o\0");  // UTF-16
  EXPECT_TRUE(contains(e, at_line(1) + "1: malformed YAML: invalid UTF-8")) << e;
  e = error_of("macros:\n  m: \"\\uD800\"\n");
  EXPECT_TRUE(contains(e, at_line(2) + "13: malformed YAML: invalid unicode")) << e;
  // Escaped control characters, a byte-order mark and CRLF line ends are fine.
  const Options o =
      load_ok("\xEF\xBB\xBFlog_level: \"warn\"\r\nmacros:\r\n  m: \"a\\tb\\x01\"\r\n");
  EXPECT_EQ(o.log_level, log::Level::kWarn);
  EXPECT_EQ(o.rules.macros.at("m"), "a\tb\x01");
  expect_same_configuration(o, load_ok(render_config(o)));
}

// The rules.

TEST_F(ConfigTest, RulesWithLinesListsAndMacros) {
  const Options o = load_ok(R"(log_level: info
egress:
  enabled: false
  rules:
  - rule: to-dns
    event: port_dst in dns_ports
  - rule: "quoted name"
    scope: binary_name == "curl"
ingress:
  rules:

  - rule: web
    scope: is_web
    event: port_dst == 443
lists:
  dns_ports: [53, 853]
  private_nets:
  - 10.0.0.0/8
  - "192.168.0.0/16"
  empty: []
macros:
  is_web: binary_name in ["nginx", "envoy"]
  local: ipv4_dst == "127.0.0.1"
)");
  EXPECT_FALSE(o.rules.egress.enabled);
  ASSERT_EQ(o.rules.egress.rules.size(), 2u);
  EXPECT_EQ(o.rules.egress.rules[0].name, "to-dns");
  EXPECT_EQ(o.rules.egress.rules[0].scope, "");
  EXPECT_EQ(o.rules.egress.rules[0].event, "port_dst in dns_ports");
  EXPECT_EQ(o.rules.egress.rules[0].line, 5);
  EXPECT_EQ(o.rules.egress.rules[1].name, "quoted name");
  EXPECT_EQ(o.rules.egress.rules[1].scope, "binary_name == \"curl\"");
  EXPECT_EQ(o.rules.egress.rules[1].event, "");
  EXPECT_EQ(o.rules.egress.rules[1].line, 7);
  EXPECT_TRUE(o.rules.ingress.enabled);
  ASSERT_EQ(o.rules.ingress.rules.size(), 1u);
  EXPECT_EQ(o.rules.ingress.rules[0].name, "web");
  EXPECT_EQ(o.rules.ingress.rules[0].scope, "is_web");
  EXPECT_EQ(o.rules.ingress.rules[0].event, "port_dst == 443");
  EXPECT_EQ(o.rules.ingress.rules[0].line, 12);
  EXPECT_EQ(o.rules.lists.at("dns_ports"), (std::vector<std::string>{"53", "853"}));
  EXPECT_EQ(o.rules.lists.at("private_nets"),
            (std::vector<std::string>{"10.0.0.0/8", "192.168.0.0/16"}));
  EXPECT_TRUE(o.rules.lists.at("empty").empty());
  EXPECT_EQ(o.rules.macros.at("is_web"), "binary_name in [\"nginx\", \"envoy\"]");
  EXPECT_EQ(o.rules.macros.at("local"), "ipv4_dst == \"127.0.0.1\"");
}

TEST_F(ConfigTest, RuleErrors) {
  std::string e = error_of("egress:\n  rules:\n  - event: port_dst == 1\n");
  EXPECT_TRUE(contains(e, at_line(3) + "5: egress.rules[0]: has no `rule:`")) << e;
  e = error_of("egress:\n  rules:\n  - rule: \"\"\n");
  EXPECT_TRUE(contains(e, at_line(3) + "11: egress.rules[0].rule: a rule needs a name")) << e;
  e = error_of("egress:\n  rules:\n  - just-a-name\n");
  EXPECT_TRUE(contains(e, at_line(3) + "5: egress.rules[0]: expected a mapping of rule, scope, "
                                       "event, got the scalar 'just-a-name'"))
      << e;
  e = error_of("egress:\n  rules:\n    rule: a\n");
  EXPECT_TRUE(contains(e, at_line(3) + "5: egress.rules: expected a list of rules, got a mapping"))
      << e;
  e = error_of("ingress:\n  rules:\n  - rule: a\n    event: [port_dst]\n");
  EXPECT_TRUE(contains(e, at_line(4) + "12: ingress.rules[0].event: expected a string, got a list"))
      << e;
  e = error_of("ingress: true\n");
  EXPECT_TRUE(contains(e, at_line(1) + "10: ingress: expected a mapping of enabled, rules")) << e;
  e = error_of("lists:\n  ports: 80\n");
  EXPECT_TRUE(contains(e, at_line(2) + "10: lists.ports: expected a list of values, got the "
                                       "scalar '80'"))
      << e;
  e = error_of("lists:\n  ports: [80, [443]]\n");
  EXPECT_TRUE(contains(e, at_line(2) + "15: lists.ports[1]: expected a string or a number, got a "
                                       "list"))
      << e;
  e = error_of("lists:\n  ports: [80, ~]\n");
  EXPECT_TRUE(contains(e, "lists.ports[1]: expected a string or a number, got an empty value"))
      << e;
  e = error_of("lists: [a]\n");
  EXPECT_TRUE(contains(e, at_line(1) + "8: lists: expected a mapping of list names")) << e;
  e = error_of("macros:\n  m: {a: b}\n");
  EXPECT_TRUE(contains(e, at_line(2) + "6: macros.m: expected a string, got a mapping")) << e;
  e = error_of("macros: [a]\n");
  EXPECT_TRUE(contains(e, at_line(1) + "9: macros: expected a mapping of macro names")) << e;
}

std::string reference_example() {
  std::ifstream in(std::string(NETMON_SHARED_DIR) + "/REFERENCE.md");
  std::stringstream text;
  text << in.rdbuf();
  const std::string md = text.str();
  const size_t start = md.find("```yaml\n");
  if (start == std::string::npos) return "";
  const size_t end = md.find("```", start + 8);
  return md.substr(start + 8, end - start - 8);
}

TEST_F(ConfigTest, ReferenceExampleLoads) {
  const std::string yaml = reference_example();
  if (yaml.empty()) GTEST_SKIP() << NETMON_SHARED_DIR "/REFERENCE.md is absent";
  ASSERT_TRUE(contains(yaml, "NetMonIpv4Test")) << yaml;
  const Options o = load_ok(yaml);
  EXPECT_TRUE(o.rules.egress.enabled);
  ASSERT_EQ(o.rules.egress.rules.size(), 2u);
  EXPECT_EQ(o.rules.egress.rules[0].name, "NetMonIpv4Test");
  EXPECT_EQ(o.rules.egress.rules[0].event,
            "ipv4_dst == \"127.0.0.1\" AND ipv4_src == \"127.0.0.1\" AND port_dst == 7878");
  EXPECT_EQ(o.rules.egress.rules[0].line, 4);
  EXPECT_EQ(o.rules.egress.rules[1].name, "tcp-connections-out-of-cluster");
  EXPECT_EQ(o.rules.egress.rules[1].event,
            "NOT ipv4_dst in [\"10.0.0.0/8\", \"172.16.0.0/12\", \"192.168.0.0/16\"]");
  EXPECT_EQ(o.rules.egress.rules[1].line, 6);
  EXPECT_TRUE(o.rules.ingress.enabled);
  ASSERT_EQ(o.rules.ingress.rules.size(), 1u);
  EXPECT_EQ(o.rules.ingress.rules[0].name, "NetMonIpv6Test");
  EXPECT_EQ(o.rules.ingress.rules[0].scope, "binary_name == \"nc.openbsd\"");
  EXPECT_EQ(o.rules.ingress.rules[0].event, "ipv6_dst == \"::1\" AND port_dst == 7879");
  EXPECT_EQ(o.rules.ingress.rules[0].line, 11);
}

// --print-config.

void expect_same_configuration(const Options& a, const Options& b) {
  EXPECT_EQ(render_config(a), render_config(b));
  EXPECT_EQ(a.log_level, b.log_level);
  EXPECT_EQ(a.probe.variants, b.probe.variants);
  EXPECT_EQ(a.probe.ring_buffer_bytes, b.probe.ring_buffer_bytes);
  EXPECT_EQ(a.probe.max_connections, b.probe.max_connections);
  EXPECT_EQ(a.output_queue_bytes, b.output_queue_bytes);
  EXPECT_EQ(a.proc_root, b.proc_root);
  EXPECT_EQ(a.max_processes, b.max_processes);
  EXPECT_EQ(a.kubelet_url, b.kubelet_url);
  EXPECT_EQ(a.kubelet_token_file, b.kubelet_token_file);
  EXPECT_EQ(a.kubelet_ca_file, b.kubelet_ca_file);
  EXPECT_EQ(a.kubelet_insecure_skip_verify, b.kubelet_insecure_skip_verify);
  EXPECT_EQ(a.kubelet_poll_interval_s, b.kubelet_poll_interval_s);
  EXPECT_EQ(a.pod_grace_period_s, b.pod_grace_period_s);
  EXPECT_EQ(a.pod_labels, b.pod_labels);
  EXPECT_EQ(a.node_name, b.node_name);
  EXPECT_EQ(a.cgroup_root, b.cgroup_root);
  EXPECT_EQ(a.metrics_address, b.metrics_address);
  EXPECT_EQ(a.metrics_drop_labels, b.metrics_drop_labels);
  EXPECT_EQ(a.events.establish, b.events.establish);
  EXPECT_EQ(a.events.accept, b.events.accept);
  EXPECT_EQ(a.events.close, b.events.close);
  EXPECT_EQ(a.events.failed, b.events.failed);
  EXPECT_EQ(a.kube_api_url, b.kube_api_url);
  EXPECT_EQ(a.kube_api_token_file, b.kube_api_token_file);
  EXPECT_EQ(a.kube_api_ca_file, b.kube_api_ca_file);
  EXPECT_EQ(a.kube_api_insecure_skip_verify, b.kube_api_insecure_skip_verify);
  EXPECT_EQ(a.kube_api_allow_http_token, b.kube_api_allow_http_token);
  EXPECT_EQ(a.watch_services, b.watch_services);
  EXPECT_EQ(a.watch_nodes, b.watch_nodes);
  EXPECT_EQ(a.watch_pods, b.watch_pods);
  EXPECT_EQ(a.peer_labels, b.peer_labels);
  EXPECT_EQ(a.external_networks, b.external_networks);
  for (auto [x, y] : {std::pair{&a.rules.egress, &b.rules.egress},
                      std::pair{&a.rules.ingress, &b.rules.ingress}}) {
    EXPECT_EQ(x->enabled, y->enabled);
    ASSERT_EQ(x->rules.size(), y->rules.size());
    for (size_t i = 0; i < x->rules.size(); ++i) {
      EXPECT_EQ(x->rules[i].name, y->rules[i].name);
      EXPECT_EQ(x->rules[i].scope, y->rules[i].scope);
      EXPECT_EQ(x->rules[i].event, y->rules[i].event);
    }
  }
  EXPECT_EQ(a.rules.lists, b.rules.lists);
  EXPECT_EQ(a.rules.macros, b.rules.macros);
}

TEST_F(ConfigTest, PrintConfigSwitch) {
  auto r = parse_options({"--print-config"}, env_of({}));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->print_config);
  EXPECT_TRUE(contains(parse_options({"--print-config=yes"}, env_of({})).error().message,
                       "--print-config takes no value"));
}

TEST_F(ConfigTest, PrintedDefaultsNameEveryKeyAndLoadBack) {
  const Options defaults = *parse_options({}, env_of({}));
  const std::string printed = render_config(defaults);
  for (const char* line :
       {"log_level: info\n", "hook_variant: auto\n", "ring_buffer_bytes: 4194304\n",
        "max_connections: 262144\n", "output:\n  queue_bytes: 8388608\n  max_pause_ms: 1000\n",
        "process_table:\n  proc_root: /proc\n  max_processes: 65536\n",
        "kubernetes:\n  kubelet_url: \"\"\n  token_file: \"\"\n  ca_file: \"\"\n"
        "  insecure_skip_verify: false\n  kubelet_allow_http_token: false\n"
        "  poll_interval_seconds: 10\n"
        "  pod_grace_period_seconds: 60\n  labels: true\n  node_name: \"\"\n  cgroup_root: \"\"\n"
        "  api_url: \"\"\n  api_token_file: \"\"\n  api_ca_file: \"\"\n"
        "  api_insecure_skip_verify: false\n  api_allow_http_token: false\n"
        "  watch_services: true\n  watch_nodes: true\n"
        "  watch_pods: false\n  peer_labels: false\n  external_networks: {}\n",
        "metrics:\n  address: 0.0.0.0:9477\n  drop_labels: []\n",
        "events:\n  establish: true\n  accept: true\n  close: true\n  failed: true\n",
        "egress:\n  enabled: true\n  rules: []\n", "ingress:\n  enabled: true\n  rules: []\n",
        "lists: {}\n", "macros: {}\n"}) {
    EXPECT_TRUE(contains(printed, line)) << line << "\nin\n" << printed;
  }
  EXPECT_TRUE(printed.starts_with("# ")) << printed;
  expect_same_configuration(defaults, load_ok(printed));
}

TEST_F(ConfigTest, PrintConfigRoundTripOfEverySourceAndTheRules) {
  const std::string yaml = std::string(kEveryKey) + R"(egress:
  enabled: false
  rules:
  - rule: NetMonIpv4Test
    event: ipv4_dst == "127.0.0.1" AND port_dst == 7878
  - rule: "true"
    scope: "null"
    event: "port_dst in ports # not a comment"
ingress:
  rules:
  - rule: "~"
    scope: "binary_name == \"nc\"\nOR binary_prefix == \"/usr/\""
    event: " leading and trailing space "
lists:
  ports: [80, "443", "#", "a: b", "", "- x"]
  "odd name": ["\t", "ünïcödé", "a\rb", "\x85\u2028\uFEFF", "\x01\x7f"]
  "key\r\nwith breaks": []
macros:
  m: "[x, y]"
  "yes": "no"
)";
  const Options original =
      load_ok(yaml, {"--node-name=true", "--kubelet-url=http://[::1]:1/x"},
              {{"NETMON_CGROUP_ROOT", "/c g/root"}, {"NETMON_METRICS_ADDRESS", "[::]:0"}});
  ASSERT_EQ(original.node_name, "true");
  ASSERT_EQ(original.cgroup_root, "/c g/root");
  ASSERT_EQ(original.rules.ingress.rules.size(), 1u);
  const std::string printed = render_config(original);
  const Options reloaded = load_ok(printed);
  expect_same_configuration(original, reloaded);
  EXPECT_EQ(reloaded.rules.lists.at("ports"),
            (std::vector<std::string>{"80", "443", "#", "a: b", "", "- x"}));
  EXPECT_EQ(reloaded.rules.ingress.rules[0].scope,
            "binary_name == \"nc\"\nOR binary_prefix == \"/usr/\"");
  EXPECT_EQ(render_config(reloaded), printed);
  EXPECT_EQ(reloaded.external_networks, kEveryKeyNetworks);
  EXPECT_TRUE(contains(printed,
                       "  external_networks:\n    zeta: [10.0.0.0/8, 192.168.0.0/16]\n"
                       "    metadata: [169.254.169.254/32]\n    v6: [\"fd00::/8\"]\n"
                       "    none: []\n"))
      << printed;
}

// The API server and the peers' settings (#19): from the file, under the environment and the
// flags; external_networks as an ordered mapping, and what the file may not hold there.

TEST_F(ConfigTest, PeerSettingsPrecedence) {
  const std::string yaml =
      "kubernetes:\n  api_url: https://file:6443\n  watch_pods: true\n"
      "  external_networks:\n    file: [10.0.0.0/8]\n";
  Options o = load_ok(yaml);
  EXPECT_EQ(o.kube_api_url, "https://file:6443");
  EXPECT_TRUE(o.watch_pods);
  ASSERT_EQ(o.external_networks.size(), 1u);
  EXPECT_EQ(o.external_networks[0].first, "file");
  o = load_ok(yaml, {},
              {{"NETMON_KUBE_API_URL", "https://env:6443"},
               {"NETMON_WATCH_PODS", "false"},
               {"NETMON_EXTERNAL_NETWORKS", "env=192.168.0.0/16"}});
  EXPECT_EQ(o.kube_api_url, "https://env:6443");
  EXPECT_FALSE(o.watch_pods);
  ASSERT_EQ(o.external_networks.size(), 1u);
  EXPECT_EQ(o.external_networks[0].first, "env");
  o = load_ok(yaml, {"--kube-api-url=https://flag:6443", "--watch-pods", "--external-networks="},
              {{"NETMON_KUBE_API_URL", "https://env:6443"},
               {"NETMON_WATCH_PODS", "false"},
               {"NETMON_EXTERNAL_NETWORKS", "env=192.168.0.0/16"}});
  EXPECT_EQ(o.kube_api_url, "https://flag:6443");
  EXPECT_TRUE(o.watch_pods);
  EXPECT_TRUE(o.external_networks.empty());  // "" given: none, over the file and variable
  // Every value in the file is checked, also one a flag overrides.
  const std::string e = error_of("kubernetes:\n  external_networks:\n    a: [10.0.0.1/8]\n",
                                 {"--external-networks="});
  EXPECT_TRUE(contains(e, at_line(3) + "9: kubernetes.external_networks.a[0]: '10.0.0.1/8' is "
                                       "not a CIDR: address bits past the /8 prefix are not zero"))
      << e;
}

TEST_F(ConfigTest, WatchedResourcesDefaultOnAndSwitchOffOneByOne) {
  Options o = load_ok("");
  EXPECT_TRUE(o.watch_services);
  EXPECT_TRUE(o.watch_nodes);
  EXPECT_FALSE(o.watch_pods);
  o = load_ok("kubernetes:\n  watch_nodes: false\n");
  EXPECT_TRUE(o.watch_services);
  EXPECT_FALSE(o.watch_nodes);
  o = load_ok("kubernetes:\n  watch_nodes: false\n", {"--watch-nodes"},
              {{"NETMON_WATCH_SERVICES", "false"}});
  EXPECT_FALSE(o.watch_services);
  EXPECT_TRUE(o.watch_nodes);
  const std::string e = error_of("kubernetes:\n  watch_services: maybe\n");
  EXPECT_TRUE(contains(e, "kubernetes.watch_services")) << e;
}

TEST_F(ConfigTest, BadPeerSettingsNameTheKeyAndPosition) {
  std::string e = error_of("kubernetes:\n  api_url: https://api:6443/api\n");
  EXPECT_TRUE(contains(e, at_line(2) + "12: kubernetes.api_url: 'https://api:6443/api' has a path"))
      << e;
  e = error_of("kubernetes:\n  api_url: api:6443\n");
  EXPECT_TRUE(contains(e, at_line(2) + "12: kubernetes.api_url: 'api:6443' has no scheme")) << e;
  e = error_of("kubernetes:\n  watch_pods: yes\n");
  EXPECT_TRUE(contains(e, at_line(2) + "15: kubernetes.watch_pods: expected true or false")) << e;
  e = error_of("kubernetes:\n  peer_labels: \"true\"\n");
  EXPECT_TRUE(contains(e, "kubernetes.peer_labels: expected true or false, got the quoted")) << e;
  e = error_of("kubernetes:\n  api_token_file: [a]\n");
  EXPECT_TRUE(contains(e, "kubernetes.api_token_file: expected a string, got a list")) << e;
  e = error_of("kubernetes:\n  api_ulr: https://x\n");
  EXPECT_TRUE(contains(e, "did you mean kubernetes.api_url?")) << e;
  // The bad CIDR at its own line and column, in a block and in a flow list.
  e = error_of(
      "kubernetes:\n  external_networks:\n    private:\n    - 10.0.0.0/8\n"
      "    - 192.168.0.0/33\n");
  EXPECT_TRUE(contains(e, at_line(5) + "7: kubernetes.external_networks.private[1]: "
                                       "'192.168.0.0/33' is not a CIDR: prefix length is not a "
                                       "number from 0 to 32"))
      << e;
  e = error_of("kubernetes:\n  external_networks: {a: [10.0.0.0/8], b: [::1/129]}\n");
  EXPECT_TRUE(contains(e, at_line(2) + "44: kubernetes.external_networks.b[0]: '::1/129' is not "
                                       "a CIDR"))
      << e;
  // A class name the events and rules could not show.
  e = error_of("kubernetes:\n  external_networks:\n    \"my net\": [10.0.0.0/8]\n");
  EXPECT_TRUE(contains(e, at_line(3) + "5: kubernetes.external_networks: the class name 'my net' "
                                       "is not 1 to 63 letters"))
      << e;
}

TEST_F(ConfigTest, HostileExternalNetworks) {
  const std::pair<const char*, const char*> bad[] = {
      // Nested mappings where a list is expected, and every other wrong shape.
      {"  external_networks:\n    a:\n      b: [10.0.0.0/8]\n",
       ":4:7: kubernetes.external_networks.a: expected a list, got a mapping"},
      {"  external_networks:\n    a: [{b: 10.0.0.0/8}]\n",
       ":3:9: kubernetes.external_networks.a[0]: expected a string, got a mapping"},
      {"  external_networks:\n    a: [[10.0.0.0/8]]\n",
       ":3:9: kubernetes.external_networks.a[0]: expected a string, got a list"},
      {"  external_networks:\n    a: [~]\n",
       "kubernetes.external_networks.a[0]: expected a string, got an empty value"},
      {"  external_networks:\n    a: 10.0.0.0/8\n",
       ":3:8: kubernetes.external_networks.a: expected a list, got the scalar '10.0.0.0/8'"},
      {"  external_networks:\n    a:\n",
       ":3:5: kubernetes.external_networks.a: expected a list, got an empty value"},
      {"  external_networks: [10.0.0.0/8]\n",
       ":2:22: kubernetes.external_networks: expected a mapping of names to lists, got a list"},
      {"  external_networks: \"a=10.0.0.0/8\"\n",
       "kubernetes.external_networks: expected a mapping of names to lists, got the scalar"},
      {"  external_networks:\n", ":2:3: kubernetes.external_networks: has no value (write {}"},
      // Names: given twice, empty, not a scalar, with a separator of the text form.
      {"  external_networks:\n    a: [10.0.0.0/8]\n    a: []\n",
       ":4:5: kubernetes.external_networks.a: given twice (first on line 3)"},
      {"  external_networks:\n    \"\": [10.0.0.0/8]\n",
       ":3:5: kubernetes.external_networks: a key is empty"},
      {"  external_networks:\n    [a]: [10.0.0.0/8]\n",
       ":3:5: kubernetes.external_networks: keys must be names, got a list"},
      {"  external_networks:\n    \"a=b\": [10.0.0.0/8]\n",
       ":3:5: kubernetes.external_networks: the name 'a=b' holds '=', ';' or ','"},
      {"  external_networks:\n    a: [\"10.0.0.0/8;b=1.2.3.4\"]\n",
       "kubernetes.external_networks.a[0]: '10.0.0.0/8;b=1.2.3.4' is not a single item"},
      {"  external_networks:\n    a: [\"10.0.0.0/8,1.2.3.4\"]\n", "is not a single item"},
      {"  external_networks:\n    a: [\"\"]\n", "'' is not a single item"},
      // An alias that makes a list of mappings.
      {"  external_networks:\n    a: &x [10.0.0.0/8]\n    b: [*x]\n",
       "kubernetes.external_networks.b[0]: expected a string, got a list"},
  };
  for (const auto& [body, why] : bad) {
    const std::string e = error_of(std::string("kubernetes:\n") + body);
    // A position (":LINE:COLUMN: ...") right after the file's name.
    EXPECT_TRUE(contains(e, why[0] == ':' ? file_ + why : std::string(why))) << body << "\n" << e;
  }
}

TEST_F(ConfigTest, HugeExternalNetworksAreBounded) {
  // 65 classes, and 4097 CIDRs in one class: refused naming the key and the cap.
  std::string yaml = "kubernetes:\n  external_networks:\n";
  for (int c = 0; c < 65; ++c) yaml += "    c" + std::to_string(c) + ": [10.0.0.0/8]\n";
  std::string e = error_of(yaml);
  EXPECT_TRUE(contains(e, at_line(3) + "5: kubernetes.external_networks: 65 classes; at most 64"))
      << e.substr(0, 300);
  yaml = "kubernetes:\n  external_networks:\n    big:\n";
  for (int i = 0; i < 4097; ++i) {
    yaml += "    - 10." + std::to_string(i >> 8) + "." + std::to_string(i & 255) + ".0/24\n";
  }
  e = error_of(yaml);
  EXPECT_TRUE(contains(e, "kubernetes.external_networks: 4097 CIDRs; at most 4096")) << e;
  EXPECT_LT(e.size(), 300u);  // the message does not carry the list
}

TEST(ConfigModule, MapOfListsText) {
  const config::NamedLists lists = {{"b", {"1", "2"}}, {"a", {}}, {"c", {"3"}}};
  EXPECT_EQ(config::map_of_lists_text(lists), "b=1,2;a=;c=3");
  EXPECT_EQ(config::map_of_lists_text({}), "");
  auto back = config::parse_map_of_lists_text("b=1,2;a=;c=3");
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, lists);
  back = config::parse_map_of_lists_text(" b = 1 , 2 ;a= ; c=3 ");
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, lists);
  EXPECT_TRUE(config::parse_map_of_lists_text("")->empty());
  for (const char* text : {"a", "a=1;", ";a=1", "=1", " =1", "a=1,", "a=,1", "a=1;a=2"}) {
    EXPECT_FALSE(config::parse_map_of_lists_text(text)) << text;
  }
  // The YAML mapping arrives in the same text, in the file's order; render writes it back as a
  // mapping that parses to the same text.
  const std::vector<config::Key> keys = {{"m", config::Kind::kMapOfLists},
                                         {"s.m", config::Kind::kMapOfLists}};
  auto doc = config::parse("m:\n  z: [x, 'y']\n  a: []\ns:\n  m: {}\n", "t", keys);
  ASSERT_TRUE(doc) << doc.error().message;
  ASSERT_EQ(doc->values.size(), 2u);
  EXPECT_EQ(doc->values[0].text, "z=x,y;a=");
  EXPECT_EQ(doc->values[0].line, 2);
  EXPECT_EQ(doc->values[1].text, "");
  const std::string rendered =
      config::render({{keys[0], doc->values[0].text}, {keys[1], ""}}, RulesSpec{}, "");
  EXPECT_TRUE(rendered.starts_with("m:\n  z: [x, y]\n  a: []\ns:\n  m: {}\n")) << rendered;
  auto again = config::parse(rendered, "t", keys);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->values[0].text, "z=x,y;a=");
}

TEST_F(ConfigTest, MetricsOffRoundTrips) {
  const Options o = load_ok("metrics:\n  address: \"off\"\n");
  EXPECT_EQ(o.metrics_address, "");
  EXPECT_TRUE(contains(render_config(o), "  address: off\n")) << render_config(o);
  EXPECT_EQ(load_ok(render_config(o)).metrics_address, "");
}

// The loader on text, as the fuzz target drives it.

TEST(ConfigText, ApplyConfigNamesTheSource) {
  Options o;
  ASSERT_TRUE(apply_config(o, "max_connections: 2048\n", "inline"));
  EXPECT_EQ(o.probe.max_connections, 2048u);
  auto r = apply_config(o, "\n\nmax_connections: 1\n", "inline");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "inline:3:18: max_connections: 1 is out of range [1024, 16777216]");
}

TEST(ConfigText, RulesReplaceEarlierRules) {
  Options o;
  ASSERT_TRUE(apply_config(o, "egress:\n  rules:\n  - rule: a\n", "one"));
  ASSERT_EQ(o.rules.egress.rules.size(), 1u);
  ASSERT_TRUE(apply_config(o, "log_level: info\n", "two"));
  EXPECT_TRUE(o.rules.egress.rules.empty());
}

TEST(ConfigModule, RejectsNothingItDoesNotKnowAndNeverThrows) {
  const std::vector<config::Key> keys = {{"a", config::Kind::kNumber},
                                         {"s.b", config::Kind::kBool}};
  for (const char* text : {"\xff\xfe\x00", "[", "{", "a: &x [*x]", "!!binary a", "? ? ? ?",
                           "a: !<tag:yaml.org,2002:int> 5", "%YAML 9.9\n---\na: 1", "\t- x",
                           "a: 1\r\ns:\r\n  b: true\r\n"}) {
    (void)config::parse(text, "t", keys);  // no exception escapes
  }
  auto r = config::parse("a: 1\r\ns:\r\n  b: true\r\n", "t", keys);
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->values.size(), 2u);
  EXPECT_EQ(r->values[1].key, "s.b");
  EXPECT_EQ(r->values[1].text, "true");
  EXPECT_EQ(r->values[1].line, 3);
  EXPECT_EQ(r->values[1].column, 6);
}

TEST(ConfigModule, SettingKeysDoNotCollideWithRuleKeys) {
  // Every key printed by --print-config is one the loader knows; the rules' keys stay reserved.
  const Options defaults;
  const std::string printed = render_config(defaults);
  for (std::string_view reserved : config::kRuleKeys) {
    std::string key = "\n";  // appended: GCC 12 -O3 false -Wrestrict on "\n" + std::string
    key += reserved;
    key += ':';
    EXPECT_TRUE(contains(printed, key)) << reserved;
  }
}

}  // namespace
}  // namespace netmon
