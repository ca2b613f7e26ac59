// Microbenchmark of the user-space pipeline alone: Pipeline::on_record (decode, process lookup,
// rules, metrics, JSON, batching) and the OutputFlow's flush() to a LineWriter on /dev/null, on
// synthetic ring-buffer records. No BPF, no /proc: the process table reads an empty temporary
// directory and is seeded with exec records. Target: at least 1 million events per second on one
// core.
//
// Variants (Args {metrics, rules, peers}): the bare pipeline, with Metrics attached, with a small
// compiled rule set, with both, and with peer lookups (issue #19) against the index of
// tests/bench/peer_cluster.h (10 000 services, 100 000 endpoints, 5 000 nodes), to show what
// each costs. The records' remote ends are a mix of that cluster's service IPs, pod IPs and node
// addresses and of external addresses, and an accepted connection's client is a pod, in every
// variant. Counters of a peers variant: the pipeline's allocations per event in its steady
// state (operator new on this thread, apart from the output's batch handovers; a peers variant
// that allocates more than the same variant without peers fails), the CPU time
// per event relative to the same variant without peers run before it in this process
// (cpu_vs_no_peers; > 1: slower), and the memory the cluster's state and index add.
//
// The fourth argument turns the service map's edge metrics (issue #22) on with metrics: with
// peers, the edge table holds 10 000 other edges before the records add theirs (the counter
// `edges`: all of them), and cpu_vs_no_edges compares with the same variant without edges run
// before it.

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "app/output_flow.h"
#include "app/pipeline.h"
#include "count_new.h"
#include "k8s/peer_snapshots.h"
#include "metrics/metrics.h"
#include "netmon_events.h"
#include "output/line_writer.h"
#include "peer_cluster.h"
#include "process/proc_reader.h"
#include "process/table.h"
#include "rules/rules.h"

namespace netmon {
namespace {

constexpr uint32_t kProcesses = 300;
constexpr uint32_t kConnections = 4096;  // 4 records each: 16384 records replayed in a loop
constexpr uint64_t kFlushEvery = 1024;
constexpr uint32_t kPrefilledEdges = 10'000;  // edges variant with peers
constexpr int kLastCap = 40;
constexpr uint64_t kBaseNs = 1'000'000'000'000ull;  // ~17 minutes after boot

using Record = std::vector<std::byte>;

template <typename T>
Record bytes_of(const T& value, std::string_view tail = {}) {
  Record r(sizeof(T) + tail.size());
  std::memcpy(r.data(), &value, sizeof(T));
  if (!tail.empty()) std::memcpy(r.data() + sizeof(T), tail.data(), tail.size());
  return r;
}

uint32_t pid_of(uint32_t process) { return 20000 + process * 7; }
uint64_t start_of(uint32_t process) { return kBaseNs / 2 + uint64_t{process} * 13'000'000; }

nm_task task_of(uint32_t process) {
  nm_task t{};
  t.pid = pid_of(process);
  t.tid = t.pid;
  t.ppid = process == 0 ? 1 : pid_of(0);  // process 0 (a shell) is everyone's parent
  t.uid = process % 3 == 0 ? 0 : 1000;
  t.euid = t.uid;
  t.gid = t.uid;
  t.egid = t.uid;
  t.auid = 1000;
  t.start_ns = start_of(process);
  t.cgroup_id = 4000 + process % 16;
  t.cap_effective = t.uid == 0 ? 0x1ffffffffffull : 0;
  t.cap_permitted = t.cap_effective;
  std::snprintf(t.comm, sizeof(t.comm), "worker-%u", process);
  return t;
}

struct Binary {
  std::string_view path;
  std::string_view args;  // NUL separated
};
constexpr Binary kBinaries[] = {
    {"/usr/bin/bash", std::string_view("bash\0-l", 7)},
    {"/usr/bin/curl", std::string_view("curl\0-s\0https://example.com/api/v1/items", 40)},
    {"/usr/sbin/nginx", std::string_view("nginx\0-g\0daemon off;", 20)},
    {"/usr/bin/python3.11", std::string_view("python3\0/srv/app/worker.py\0--threads\0008", 39)},
    {"/usr/lib/postgresql/15/bin/postgres",
     std::string_view("postgres\0-D\0/var/lib/postgresql/15/main", 39)},
};

Record exec_record(uint32_t process) {
  const Binary& b = process == 0 ? kBinaries[0] : kBinaries[1 + process % 4];
  nm_exec_record r{};
  r.hdr.type = NM_REC_EXEC;
  r.hdr.ts_ns = start_of(process) + 1'000'000;
  r.task = task_of(process);
  r.path_len = static_cast<uint16_t>(b.path.size());
  r.args_len = static_cast<uint16_t>(b.args.size());
  r.hdr.size = static_cast<uint16_t>(sizeof(r) + b.path.size() + b.args.size());
  std::string tail(b.path);
  tail.append(b.args);
  return bytes_of(r, tail);
}

void set_v4(__u8 (&out)[NM_ADDR_LEN], uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  out[0] = a;
  out[1] = b;
  out[2] = c;
  out[3] = d;
}

void set_v6(__u8 (&out)[NM_ADDR_LEN], uint16_t head, uint32_t host) {
  out[0] = static_cast<__u8>(head >> 8);
  out[1] = static_cast<__u8>(head);
  out[2] = 0x0d;
  out[3] = 0xb8;
  out[12] = static_cast<__u8>(host >> 24);
  out[13] = static_cast<__u8>(host >> 16);
  out[14] = static_cast<__u8>(host >> 8);
  out[15] = static_cast<__u8>(host);
}

// One connection between two local processes as the kernel reports it: the client's Establish,
// the server's Accept, then a Close for each end. Even connections IPv4, odd ones IPv6.
void add_connection(uint32_t i, std::vector<Record>& out) {
  const uint32_t client = 1 + i % (kProcesses - 1);
  const uint32_t server = 1 + (i * 31 + 17) % (kProcesses - 1);
  const bool v6 = i % 2 == 1;
  const uint16_t service = i % 3 == 0 ? 443 : i % 3 == 1 ? 5432 : 8080;
  const uint16_t ephemeral = static_cast<uint16_t>(32768 + i % 28000);
  const uint64_t open_ns = kBaseNs + uint64_t{i} * 50'000;

  nm_conn_record base{};
  base.hdr.type = NM_REC_CONNECTION;
  base.hdr.size = sizeof(nm_conn_record);
  base.family = v6 ? NM_AF_INET6 : NM_AF_INET;
  base.flags = NM_CONN_F_OWNER_KNOWN;

  // The client's end: local = client address.
  nm_conn_record c = base;
  c.hdr.ts_ns = open_ns;
  c.task = task_of(client);
  c.cookie = 0x10000 + uint64_t{i} * 2;
  // IPv4: the client is a pod of the bench cluster; half go to private addresses of the cluster
  // (a service's cluster IP, a pod, a node: the rules filter those), half to public ones.
  if (v6) {
    set_v6(c.saddr, 0x2001, 0x0a000001 + i);
    set_v6(c.daddr, 0x2001, 0x0a100001 + i * 7);
  } else {
    constexpr size_t kPods = bench::kServices * bench::kPodsPerService;
    std::memcpy(c.saddr, bench::pod_ip(size_t{i} * 13 % kPods).bytes.data(), 4);
    if (i % 4 == 0) {
      const IpAddress remote = i % 8 == 0    ? bench::service_ip(i / 8 % bench::kServices)
                               : i % 16 == 4 ? bench::pod_ip(size_t{i} * 7 % kPods)
                                             : bench::node_ip(1 + i / 16 % (bench::kNodes - 1));
      std::memcpy(c.daddr, remote.bytes.data(), 4);
    } else {
      set_v4(c.daddr, 93, 184, static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i + 1));
    }
  }
  c.sport = ephemeral;
  c.dport = service;
  c.kind = NM_CONN_ESTABLISH;
  c.direction = NM_DIR_OUTBOUND;

  // The server's end: local = server address.
  nm_conn_record s = base;
  s.hdr.ts_ns = open_ns + 20'000;
  s.task = task_of(server);
  s.cookie = c.cookie + 1;
  std::memcpy(s.saddr, c.daddr, sizeof(s.saddr));
  std::memcpy(s.daddr, c.saddr, sizeof(s.daddr));
  s.sport = service;
  s.dport = ephemeral;
  s.kind = NM_CONN_ACCEPT;
  s.direction = NM_DIR_INBOUND;

  out.push_back(bytes_of(c));
  out.push_back(bytes_of(s));

  for (nm_conn_record* end : {&c, &s}) {
    nm_conn_record close = *end;
    close.kind = NM_CONN_CLOSE;
    close.hdr.ts_ns = open_ns + 3'000'000 + (end == &s ? 10'000 : 0);
    close.open_ns = end->hdr.ts_ns;
    close.bytes_sent = end == &c ? 512 + i % 4096 : 16384 + i % 65536;
    close.bytes_received = end == &c ? 16384 + i % 65536 : 512 + i % 4096;
    close.srtt_us = 40 + i % 200;
    close.retransmits = i % 50 == 0 ? 1 : 0;
    close.closed_by = end == &c ? NM_CLOSED_BY_LOCAL : NM_CLOSED_BY_REMOTE;
    close.reset = i % 100 == 0 ? 1 : 0;
    out.push_back(bytes_of(close));
  }
}

RulesSpec small_rules() {
  RulesSpec spec;
  spec.lists["private"] = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"};
  spec.egress.rules.push_back(
      {"database-out", R"(binary_name == "python3.11")", R"(port_dst in [5432, 3306])", 1});
  spec.egress.rules.push_back({"out-of-cluster", "", R"(NOT ipv4_dst in private)", 2});
  spec.ingress.rules.push_back({"root-servers", "uid == 0", "", 3});
  spec.ingress.rules.push_back(
      {"web-in", R"(binary_name in ["nginx", "postgres"])", R"(port_dst in [443, 5432, 8080])", 4});
  return spec;
}

// The peer index's cluster, built once (and only when a peers variant runs).
const bench::Cluster& cluster() {
  static const bench::Cluster c(false);
  return c;
}

// Everything one run needs; the records are built before timing starts.
struct Fixture {
  std::string proc_dir;
  int devnull = -1;
  std::unique_ptr<LineWriter> writer;
  std::unique_ptr<OutputFlow> output;
  std::unique_ptr<ProcessTable> processes;
  std::unique_ptr<Metrics> metrics;
  std::unique_ptr<CompiledRules> rules;
  PeerSnapshots peers;
  std::unique_ptr<Pipeline> pipeline;
  std::vector<Record> connections;
  std::string error;

  Fixture(bool with_metrics, bool with_rules, bool with_peers, bool with_edges = true,
          size_t batch_bytes = OutputFlow::Settings{}.batch_bytes) {
    char dir[] = "/tmp/netmon-bench-proc-XXXXXX";
    if (!mkdtemp(dir)) {
      error = "mkdtemp failed";
      return;
    }
    proc_dir = dir;
    devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull < 0) {
      error = "cannot open /dev/null";
      return;
    }
    writer = std::make_unique<LineWriter>(devnull, size_t{256} << 20);
    processes = std::make_unique<ProcessTable>(ProcReader(proc_dir), 8192);
    processes->seed();  // an empty directory: nothing
    PipelineDeps deps;
    if (with_metrics) {
      EdgeSettings edges;
      edges.enabled = with_edges;
      edges.max_edges = 100000;  // every edge its own series: the table's worst size
      metrics = std::make_unique<Metrics>(std::vector<std::string>{}, "bench", edges);
      if (with_edges && with_peers) {
        // A cluster's worth of edges already: the records' edges are found among 10 000 others.
        EdgeLabels labels;
        labels[kEdgeDirection] = "outbound";
        labels[kEdgeWorkloadKind] = "Deployment";
        labels[kEdgePeerKind] = "service";
        for (uint32_t e = 0; e < kPrefilledEdges; ++e) {
          labels[kEdgeNamespace] = "ns-" + std::to_string(e % 50);
          labels[kEdgeWorkload] = "client-" + std::to_string(e % 200);
          labels[kEdgePeerService] = "svc-" + std::to_string(e);
          std::string key;
          for (const std::string& l : labels) key += l + '\x1f';
          metrics->edges().find(key, labels, Direction::kOutbound, 1);
        }
      }
      deps.metrics = metrics.get();
    }
    if (with_rules) {
      auto compiled = compile_rules(small_rules());
      if (!compiled) {
        error = "rules: " + compiled.error().message;
        return;
      }
      rules = std::make_unique<CompiledRules>(std::move(*compiled));
      deps.verdicts = Verdicts(rules.get(), EventSwitches{}, 65536);
    }
    if (with_peers) {
      peers.publish(cluster().index);
      deps.peers = &peers;
    }
    OutputFlow::Settings settings;
    settings.batch_bytes = batch_bytes;
    output = std::make_unique<OutputFlow>(*writer, settings);
    pipeline = std::make_unique<Pipeline>(*output, *processes, kLastCap, std::move(deps));
    // Seed the process table through the pipeline, as the kernel's exec records would.
    for (uint32_t p = 0; p < kProcesses; ++p) {
      const Record r = exec_record(p);
      pipeline->on_record(std::span<const std::byte>(r.data(), r.size()));
    }
    if (processes->size() != kProcesses) {
      error = "process table holds " + std::to_string(processes->size()) + " processes";
      return;
    }
    connections.reserve(size_t{kConnections} * 4);
    for (uint32_t i = 0; i < kConnections; ++i) add_connection(i, connections);
  }

  ~Fixture() {
    pipeline.reset();
    output.reset();
    if (writer) writer->finish(std::chrono::seconds(10));
    writer.reset();
    if (devnull >= 0) close(devnull);
    if (!proc_dir.empty()) rmdir(proc_dir.c_str());
  }
};

uint64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Allocations per event of the pipeline in its steady state, apart from the output's batch
// handovers (each batch handed to the writer is replaced by a new buffer, and a longer line
// makes more batches): one pass over the records to warm every cache, then a counted pass into
// a batch reserved large enough for it. Deterministic; the same for a variant with peers as
// without unless a lookup allocates.
double steady_allocations_per_event(bool with_metrics, bool with_rules, bool with_peers) {
  Fixture f(with_metrics, with_rules, with_peers, true, size_t{1} << 30);
  if (!f.error.empty()) return -1;
  auto pass = [&] {
    for (const Record& r : f.connections) {
      f.pipeline->on_record(std::span<const std::byte>(r.data(), r.size()));
    }
  };
  pass();
  const size_t pass_bytes = f.output->batch().size();
  f.output->flush();
  f.output->batch().reserve(2 * pass_bytes);
  const uint64_t before = bench::new_calls();
  pass();
  const uint64_t allocations = bench::new_calls() - before;
  f.output->flush();
  return static_cast<double>(allocations) / static_cast<double>(f.connections.size());
}

// The CPU time per event of the last run of each {metrics, rules} variant without peers.
std::map<std::pair<int64_t, int64_t>, double>& cpu_without_peers() {
  static std::map<std::pair<int64_t, int64_t>, double> m;
  return m;
}

// The CPU time per event of the last run of each {metrics, rules, peers} variant without edges.
std::map<std::tuple<int64_t, int64_t, int64_t>, double>& cpu_without_edges() {
  static std::map<std::tuple<int64_t, int64_t, int64_t>, double> m;
  return m;
}

void BM_Pipeline(benchmark::State& state) {
  const bool with_metrics = state.range(0) != 0;
  const bool with_rules = state.range(1) != 0;
  const bool with_peers = state.range(2) != 0;
  const bool with_edges = state.range(3) != 0;
  Fixture f(with_metrics, with_rules, with_peers, with_edges);
  if (!f.error.empty()) {
    state.SkipWithError(f.error.c_str());
    return;
  }
  Pipeline& pipeline = *f.pipeline;
  OutputFlow& output = *f.output;
  const size_t n = f.connections.size();
  size_t next = 0;
  uint64_t since_flush = 0;
  const uint64_t cpu_before = thread_cpu_ns();
  for (auto _ : state) {
    const Record& r = f.connections[next];
    pipeline.on_record(std::span<const std::byte>(r.data(), r.size()));
    if (++next == n) next = 0;
    if (++since_flush == kFlushEvery) {
      since_flush = 0;
      output.flush();
    }
  }
  output.flush();
  const double cpu_per_event =
      static_cast<double>(thread_cpu_ns() - cpu_before) / static_cast<double>(state.iterations());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  const auto variant = std::make_pair(state.range(0), state.range(1));
  if (with_metrics) {
    const auto triple = std::make_tuple(state.range(0), state.range(1), state.range(2));
    if (!with_edges) {
      cpu_without_edges()[triple] = cpu_per_event;
    } else if (const auto it = cpu_without_edges().find(triple); it != cpu_without_edges().end()) {
      state.counters["cpu_vs_no_edges"] = cpu_per_event / it->second;
    }
    state.counters["edges"] = static_cast<double>(f.metrics->edges().size());
    if (with_peers && with_edges && f.metrics->edges().size() <= kPrefilledEdges &&
        state.iterations() >= int64_t{kConnections} * 4) {
      state.SkipWithError("the records added no edge of their own");
    }
  }
  if (!with_peers) {
    cpu_without_peers()[variant] = cpu_per_event;
  } else if (const auto it = cpu_without_peers().find(variant); it != cpu_without_peers().end()) {
    state.counters["cpu_vs_no_peers"] = cpu_per_event / it->second;
  }

  // The benchmark measures what it claims only if every record took the intended path.
  const PipelineStats& s = pipeline.stats();
  const uint64_t connection_events = s.records - kProcesses;
  uint64_t written = 0;
  for (uint64_t k : s.events_by_kind) written += k;
  state.counters["written_per_event"] =
      benchmark::Counter(static_cast<double>(written) / static_cast<double>(connection_events));
  const OutputStats out = f.writer->stats();
  if (s.decode_errors != 0) {
    state.SkipWithError("decode errors");
  } else if (s.events_without_process != 0) {
    state.SkipWithError("events without their process: the table lookup missed");
  } else if (written + s.events_filtered != connection_events) {
    state.SkipWithError("events neither written nor filtered");
  } else if (!with_rules && s.events_filtered != 0) {
    state.SkipWithError("events filtered without rules");
  } else if (out.lines_dropped_write_error != 0) {
    state.SkipWithError("writing to /dev/null failed");
  }
  uint64_t lookups = 0;
  for (uint64_t k : s.peer_lookups) lookups += k;
  if (!with_peers) {
    if (lookups != 0) state.SkipWithError("peer lookups without peers");
    return;
  }
  // Every connection event was looked up, and the records reach every kind of the cluster.
  const auto looked_up = [&](PeerKind k) { return s.peer_lookups[static_cast<size_t>(k)]; };
  if (lookups != connection_events) {
    state.SkipWithError("connection events without a peer lookup");
  } else if (state.iterations() >= int64_t{kConnections} * 4 &&
             (looked_up(PeerKind::kPod) == 0 || looked_up(PeerKind::kService) == 0 ||
              looked_up(PeerKind::kNode) == 0 || looked_up(PeerKind::kExternal) == 0)) {
    state.SkipWithError("the records miss a kind of peer of the cluster");
  }
  for (const PeerKind k :
       {PeerKind::kPod, PeerKind::kService, PeerKind::kNode, PeerKind::kExternal}) {
    state.counters[std::string("peer_") + std::string(to_string(k))] =
        static_cast<double>(looked_up(k)) / static_cast<double>(connection_events);
  }
  const bench::Cluster& c = cluster();
  state.counters["rss_state_MiB"] = c.state_rss_mib;
  state.counters["rss_index_MiB"] = c.index_rss_mib;
  // Lookups allocate nothing: the steady pipeline allocates as often with peers as without.
  const double with = steady_allocations_per_event(with_metrics, with_rules, true);
  const double without = steady_allocations_per_event(with_metrics, with_rules, false);
  state.counters["steady_allocs_per_event"] = with;
  state.counters["steady_allocs_per_event_no_peers"] = without;
  if (with < 0 || without < 0) {
    state.SkipWithError("the allocation probe's fixture failed");
  } else if (with != without) {
    const std::string message = "peer lookups allocate: " + std::to_string(with) +
                                " allocations per event with peers, " + std::to_string(without) +
                                " without";
    state.SkipWithError(message.c_str());
  }
}

// Each peers variant after its variant without peers, for cpu_vs_no_peers.
// Each edges variant after the same one without edges, for cpu_vs_no_edges.
BENCHMARK(BM_Pipeline)
    ->ArgNames({"metrics", "rules", "peers", "edges"})
    ->Args({0, 0, 0, 0})
    ->Args({0, 0, 1, 0})
    ->Args({1, 0, 0, 0})
    ->Args({1, 0, 0, 1})
    ->Args({0, 1, 0, 0})
    ->Args({1, 1, 0, 1})
    ->Args({1, 0, 1, 0})
    ->Args({1, 0, 1, 1})
    ->Args({1, 1, 1, 1})
    ->Unit(benchmark::kNanosecond);

}  // namespace
}  // namespace netmon

BENCHMARK_MAIN();
