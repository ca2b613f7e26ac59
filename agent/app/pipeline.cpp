#include "app/pipeline.h"

#include "common/log.h"
#include "events/decode.h"
#include "output/json.h"

namespace netmon {

static_assert(kLineKinds == std::tuple_size_v<decltype(PipelineStats::events_by_kind)>,
              "the writer counts written lines by ConnKind");

Pipeline::Pipeline(LineWriter& writer, ProcessTable& processes, int last_cap, size_t batch_bytes)
    : writer_(writer), processes_(processes), last_cap_(last_cap), batch_bytes_(batch_bytes) {
  batch_.reserve(batch_bytes_ + 4096);
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
      return !held_;
    }
    std::visit(
        [this](const auto& e) {
          using T = std::decay_t<decltype(e)>;
          if constexpr (std::is_same_v<T, ConnectionEvent>) {
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
          }
        },
        *event);
  } catch (const std::exception& ex) {
    // Only allocation can throw here; losing one record beats losing the agent.
    ++stats_.decode_errors;
  }
  return !held_;
}

void Pipeline::set_attribution(Attributor* attributor, std::string node_name, bool pod_labels) {
  attributor_ = attributor;
  node_name_ = std::move(node_name);
  pod_labels_ = pod_labels;
}

void Pipeline::set_rules(const CompiledRules* rules, EventSwitches switches, size_t max_tracked) {
  rules_ = rules;
  switches_ = switches;
  max_tracked_ = max_tracked;
}

namespace {

// Identifies one end of a connection for the open->close rule memory: its cookie, or, where the
// classic-tracepoint variant has none, its ports and direction.
uint64_t connection_key(const ConnectionEvent& e) {
  if (e.cookie != 0) return e.cookie;
  return (1ull << 63) | (static_cast<uint64_t>(e.direction == Direction::kInbound) << 62) |
         (static_cast<uint64_t>(e.sport) << 16) | e.dport;
}

}  // namespace

bool Pipeline::decide(const ConnectionEvent& e, const EventContext& context,
                      std::string_view& rule) {
  const bool switched_on = e.kind == ConnKind::kEstablish ? switches_.establish
                           : e.kind == ConnKind::kAccept  ? switches_.accept
                           : e.kind == ConnKind::kClose   ? switches_.close
                                                          : switches_.failed;
  if (!rules_) return switched_on;
  const uint64_t key = connection_key(e);
  if (e.kind == ConnKind::kClose) {
    auto it = open_rules_.find(key);
    if (it == open_rules_.end()) return false;  // its open event was filtered out
    rule = it->second;
    open_rules_.erase(it);
    return switched_on;
  }
  const RuleSet& set = e.kind == ConnKind::kAccept ? rules_->ingress : rules_->egress;
  if (!set.enabled()) return false;
  if (set.has_rules()) {
    // Rules speak of the connection's source and destination (who sent the SYN to whom): for an
    // accepted connection the destination is this host's end.
    const bool inbound = e.kind == ConnKind::kAccept;
    RuleInput in;
    in.saddr = inbound ? &e.daddr : &e.saddr;
    in.daddr = inbound ? &e.saddr : &e.daddr;
    in.sport = inbound ? e.dport : e.sport;
    in.dport = inbound ? e.sport : e.dport;
    if (context.process) in.binary_path = context.process->binary_path;
    if (context.parent) in.parent_binary_path = context.parent->binary_path;
    if (e.owner_known) in.uid = e.task.uid;
    if (context.attribution) {
      in.pod = context.attribution->pod;
      in.container = context.attribution->container;
    }
    auto matched = set.match(in);
    if (!matched) return false;
    rule = *matched;
  }
  if (e.kind != ConnKind::kFailed) {
    if (open_rules_.size() < max_tracked_) {
      open_rules_[key] = rule;
    } else {
      ++stats_.rule_tracking_full;
    }
  }
  return switched_on;
}

void Pipeline::handle(const ConnectionEvent& e) {
  EventContext context;
  context.last_cap = last_cap_;
  context.node_name = node_name_;
  context.pod_labels = pod_labels_;
  if (e.owner_known && attributor_) {
    // The owner's cgroup when it opened the connection: a Close keeps its open event's pod.
    context.attribution = &attributor_->resolve(e.task.cgroup_id);
    if (context.attribution->pod) ++stats_.events_with_pod;
  }
  if (e.owner_known) {
    context.process = processes_.find(e.task.pid, e.task.start_ns);
    if (!context.process) ++stats_.events_without_process;
    context.parent = processes_.find_current(e.task.ppid);
  } else {
    ++stats_.events_without_process;
  }
  if (metrics_) count(e, context.attribution);  // metrics count every connection
  if (!decide(e, context, context.rule)) {
    ++stats_.events_filtered;
    return;
  }
  ++stats_.events_by_kind[static_cast<size_t>(e.kind)];
  append_event_line(batch_, e, context, clock_);
  ++batch_lines_.by_kind[static_cast<size_t>(e.kind)];
  if (batch_.size() >= batch_bytes_ && !held_) flush();
}

void Pipeline::count(const ConnectionEvent& e, const Attribution* attribution) {
  if (attributor_ && attributor_->snapshot_version() != series_snapshot_version_) {
    // A new pod snapshot: pods whose grace period ended are gone from it; drop their series.
    series_snapshot_version_ = attributor_->snapshot_version();
    series_cache_.clear();
    if (const PodSnapshot* snapshot = attributor_->snapshot()) {
      metrics_->remove_pods(
          [snapshot](const std::string& uid) { return snapshot->find_pod(uid) != nullptr; });
    }
  }
  const uint64_t cgroup = e.owner_known ? e.task.cgroup_id : 0;
  const uint64_t key = (cgroup << 1) | (e.direction == Direction::kInbound ? 1 : 0);
  auto& series = series_cache_[key];
  // A pod still unknown to the snapshot is not cached: its next event looks again.
  if (!series || (attribution && !attribution->pod && !attribution->container_id.empty())) {
    series = metrics_->series(e.direction, attribution);
  }
  Metrics::record(*series, e);
}

void Pipeline::flush() {
  if (batch_lines_.total() == 0) return;
  if (!draining_ && stop_ && stop_->load(std::memory_order_relaxed)) {
    writer_.drain_until(std::chrono::steady_clock::now() + stop_drain_);
    draining_ = true;
  }
  if (draining_ || shedding_) {
    // Stopping: submit() waits for room until the drain deadline. Shedding: it drops at once.
    if (writer_.submit(batch_, batch_lines_)) shedding_ = false;
  } else if (!writer_.offer(batch_, batch_lines_)) {
    held_ = true;
    return;
  }
  held_ = false;
  batch_lines_ = LineCount();
}

void Pipeline::shed() {
  if (held_) {
    writer_.drop(batch_, batch_lines_);
    batch_lines_ = LineCount();
    held_ = false;
  }
  shedding_ = true;
}

}  // namespace netmon
