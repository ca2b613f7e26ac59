#include "app/pipeline.h"

#include <time.h>

#include <algorithm>

#include "common/socket_cookie.h"

#include "app/output_flow.h"
#include "common/log.h"
#include "events/decode.h"
#include "output/json.h"

namespace netmon {

namespace {

// When the connection opened: a Close's open event's time (0 would mean unknown, which the kernel
// side never sends: then the Close's own time), else the event's.
uint64_t opened_at(const ConnectionEvent& e) {
  if (e.kind == ConnKind::kClose && e.close.open_boot_ns != 0) return e.close.open_boot_ns;
  return e.boot_ns;
}

}  // namespace

static_assert(kLineKinds == std::tuple_size_v<decltype(PipelineStats::events_by_kind)>,
              "the writer counts written lines by ConnKind");

Pipeline::Pipeline(OutputFlow& output, ProcessTable& processes, int last_cap, PipelineDeps deps)
    : output_(output),
      processes_(processes),
      last_cap_(last_cap),
      attributor_(deps.attributor),
      node_name_(std::move(deps.node_name)),
      pod_labels_(deps.pod_labels),
      verdicts_(std::move(deps.verdicts)),
      peers_(deps.peers),
      nat_(deps.nat),
      peer_labels_(deps.peer_labels) {
  if (deps.metrics) {
    counters_.emplace(*deps.metrics);
    EdgeTable& edges = deps.metrics->edges();
    // ~48 bytes per connection: at most 3 MiB. Past it a Close finds its edge by its inputs.
    constexpr size_t kMaxOpenEdges = 65536;
    if (edges.settings().enabled) {
      edges_.emplace(edges, std::min(deps.max_connections, kMaxOpenEdges));
    }
  }
}

void Pipeline::remove_idle_edges() {
  if (!edges_) return;
  timespec now{};
  ::clock_gettime(CLOCK_BOOTTIME, &now);
  edges_->remove_idle(static_cast<uint64_t>(now.tv_sec) * 1'000'000'000u +
                      static_cast<uint64_t>(now.tv_nsec));
}

bool Pipeline::on_record(std::span<const std::byte> record) noexcept {
  ++stats_.records;
  try {
    Result<KernelEvent> event = decode(record);
    if (!event) {
      ++stats_.decode_errors;
      // A bad record means a BPF/agent mismatch: say so, but not once per record.
      if (decode_errors_logged_ < 5) {
        ++decode_errors_logged_;
        log::error("dropping a malformed kernel record: " + event.error().message);
      }
      return output_.reading();
    }
    std::visit(
        [this](const auto& e) {
          using T = std::decay_t<decltype(e)>;
          if constexpr (std::is_same_v<T, ConnectionEvent>) {
            if (e.accepted_fd != 0 && e.cookie == 0 && e.owner_known) {
              // A connection that waited in the accept queue from before the agent, accepted
              // through the accept() tracepoints: no cookie yet. Have it made, so that the
              // Close, whose program makes it if nobody did, carries the same (rare: a few per
              // start at most).
              ConnectionEvent with_cookie = e;
              with_cookie.cookie = socket_cookie(open_process(e.task.pid), e.accepted_fd - 1);
              handle(with_cookie);
              return;
            }
            handle(e);
          } else if constexpr (std::is_same_v<T, ExecEvent>) {
            processes_.on_exec(e);
            // Resolve the cgroup now, while it exists: a short-lived container's is gone by
            // the time its connections' records are read. The resolver keeps the identity.
            if (attributor_) attributor_->resolve(e.task.cgroup_id);
          } else if constexpr (std::is_same_v<T, ForkEvent>) {
            processes_.on_fork(e);
          } else {
            processes_.on_exit(e);
            encoder_.forget_process(e.pid);
          }
        },
        *event);
  } catch (const std::exception& ex) {
    // Only allocation can throw here; losing one record beats losing the agent.
    ++stats_.decode_errors;
  }
  return output_.reading();
}

bool Pipeline::look_up_peer(const ConnectionEvent& e, Peer& peer) {
  if (peers_ == nullptr) return false;
  // One acquire load per event; the lock in load() only when a new snapshot was published. A
  // snapshot published between the two calls is loaded again next time (harmless).
  const uint64_t version = peers_->version();
  if (version != peer_version_) {
    peer_index_ = peers_->load();
    peer_version_ = version;
  }
  if (!peer_index_) return false;
  // Who owned the remote address when the connection opened (IP reuse).
  peer = peer_index_->lookup(e.daddr, e.dport, opened_at(e));
  ++stats_.peer_lookups[static_cast<size_t>(peer.kind)];
  return true;
}

void Pipeline::count_edge(const ConnectionEvent& e, const EventContext& context,
                          const NatTranslation& nat) {
  EdgeEnds ends;
  ends.attribution = context.attribution;
  if (context.process) ends.process_name = context.process->filename;
  ends.peer = context.peer;
  ends.backend = context.backend;
  ends.pod_generation = context.pod_generation;
  ends.peer_generation = peer_version_;
  Peer original;
  if (context.nat && nat.has_original && peer_index_) {
    // The client before translation (a NodePort's, a source-NATed one's), not the node address
    // it came through.
    original = peer_index_->lookup(nat.original_addr, nat.original_port, opened_at(e));
    ends.peer = &original;
  }
  edges_->count(e, ends, e.boot_ns);
}

void Pipeline::handle(const ConnectionEvent& e) {
  // Every connection event's peer is looked up, filtered or not: the metrics count them all and
  // the rules may need it.
  Peer peer;
  const bool has_peer = look_up_peer(e, peer);

  EventContext context;
  NatTranslation nat;
  Peer backend;
  if (has_peer) {
    context.peer = &peer;
    context.peer_labels = peer_labels_;
    if (nat_ && nat_->translate(e, nat) == NatResult::kTranslated) {
      context.nat = &nat;
      if (nat.has_backend) {  // who it is, as of the connection's open (IP reuse)
        backend = peer_index_->lookup(nat.backend_addr, nat.backend_port, opened_at(e));
        context.backend = &backend;
      }
    }
  }
  context.last_cap = last_cap_;
  context.node_name = node_name_;
  context.pod_labels = pod_labels_;
  if (e.owner_known && attributor_) {
    // The owner's cgroup when it opened the connection: a Close keeps its open event's pod.
    context.attribution = &attributor_->resolve(e.task.cgroup_id);
    context.pod_generation = attributor_->snapshot_version();
    if (context.attribution->pod) ++stats_.events_with_pod;
  }
  if (e.owner_known) {
    context.process = processes_.find(e.task.pid, e.task.start_ns);
    if (!context.process) ++stats_.events_without_process;
    context.parent = processes_.find_current(e.task.ppid);
  } else {
    ++stats_.events_without_process;
  }
  if (counters_) {  // metrics count every connection
    if (attributor_)
      counters_->use_snapshot(attributor_->snapshot_version(), attributor_->snapshot());
    counters_->count(e, context.attribution);
  }
  if (edges_) count_edge(e, context, nat);
  EventOwner owner;
  if (context.process) owner.binary_path = context.process->binary_path;
  if (context.parent) owner.parent_binary_path = context.parent->binary_path;
  if (context.attribution) {
    owner.pod = context.attribution->pod;
    owner.container = context.attribution->container;
  }
  owner.peer = context.peer;
  owner.backend = context.backend;
  if (!verdicts_.decide(e, owner, context.rule)) {
    ++stats_.events_filtered;
    return;
  }
  ++stats_.events_by_kind[static_cast<size_t>(e.kind)];
  encoder_.append_event_line(output_.batch(), e, context, clock_);
  output_.line_added(static_cast<size_t>(e.kind));
}

}  // namespace netmon
