// JSON encoding of events: one object per line, appended to a caller-owned buffer so that the
// hot path reuses its allocation. EventEncoder owns the caches that make it fast.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/clock.h"
#include "events/event.h"
#include "k8s/peer_index.h"  // Peer: plain views, no API server client
#include "k8s/pods.h"        // Attribution: plain types, no kubelet client
#include "nat/nat.h"         // NatTranslation: plain types, no netlink
#include "process/process.h"

namespace netmon {

// Appends `s` as a JSON string literal (quotes included), so that any byte sequence yields valid
// JSON on one line. Valid UTF-8 is copied; control characters are escaped (\n, \t, \r, \u00XX);
// each byte that is not part of valid UTF-8 becomes the four characters \xHH (lowercase hex;
// "\\xHH" in the JSON), as Python's bytes.decode("utf-8", "backslashreplace") gives: never a
// character the bytes do not hold (docs/events.md). Allocates only when `out` grows.
void append_json_string(std::string& out, std::string_view s);

// The `network_event.type` value: "TcpConnectionEstablish", "TcpConnectionAccept",
// "TcpConnectionClose" or "TcpConnectionFailed".
std::string_view event_type_name(ConnKind kind);

// The kind of an event line EventEncoder::append_event_line() wrote, from its network_event.type
// (the first one in the line); kEstablish for a line that has none. For counting, not for parsing.
ConnKind event_kind_of_line(std::string_view line);

// What an event line is made of besides the kernel record.
struct EventContext {
  // The owner's entry in the process table; null: the object carries what the record knows
  // (ids, credentials, command name, start time, exec_id). Ids, credentials and capabilities
  // always come from the record (their values when the connection was opened).
  const ProcessEntry* process = nullptr;
  const ProcessEntry* parent = nullptr;  // null: "parent": null
  int last_cap = 40;                     // the kernel's cap_last_cap, for ANY_CAPS
  // The owner's container and pod: process.container_id and the `pod` object. May be null.
  const Attribution* attribution = nullptr;
  // Which pod snapshot attribution->pod and ->container point into (Attributor::
  // snapshot_version()): it must change whenever those objects may have changed or been freed.
  uint64_t pod_generation = 0;
  std::string_view node_name{};  // "": no node_name field
  std::string_view rule{};       // the matching rule's name; "": no rule field
  bool pod_labels = true;        // false: the pod's labels are written as {}
  // The remote end (network_event.peer); null: no peer field (the agent has no peer index).
  const Peer* peer = nullptr;
  bool peer_labels = false;  // a pod peer's labels (kubernetes.peer_labels)
  // The node's translation of the connection (peer.backend, peer.original); null: none. Written
  // only inside a peer object.
  const NatTranslation* nat = nullptr;
  // Who the backend is (the peer index's answer for nat->backend_addr/port); null: its address
  // and port only.
  const Peer* backend = nullptr;
};

// Appends the `peer` object ({"kind":"pod","namespace":...}) of docs/events.md: per kind only
// its fields, every string escaped; `labels` for a pod only when `with_labels`. With `nat`:
// `backend` ({"addr","port"} and, given `backend`, its kind and fields as a peer's) and
// `original` ({"addr","port","dialed_addr","dialed_port"}) after them.
void append_peer(std::string& out, const Peer& peer, bool with_labels,
                 const NatTranslation* nat = nullptr, const Peer* backend = nullptr);

// Writes events as JSON lines. The parts of a line that repeat from event to event are encoded
// once and kept, keyed by what they are made of; appends are most of an event's cost, and these
// caches are what make the pipeline fast. Every cache is bounded:
// - capability sets: 16 texts, keyed by the set and cap_last_cap, replaced round robin;
// - process identities (ids, credentials, capabilities): 64 texts, direct-mapped by thread and
//   process id, keyed by every field;
// - process images (the table entry's exec fields): one text per pid, keyed by the entry's task
//   start, image start and cloned flag and the boot clock's offset (the table replaces an entry on
//   exec and fork, and nothing else changes its image fields). Dropped when the process exits
//   (forget_process()); an exited process's entry (a Close after the exit) is encoded each time,
//   not kept. At most kMaxImages texts and kMaxImageBytes bytes: past either, the cache is
//   emptied.
// - pod objects: one text per pod and container within the pod snapshot of
//   EventContext::pod_generation, with or without labels; all are dropped when the generation
//   changes (pods gone from the snapshot, and pods whose metadata changed, are encoded anew). At
//   most kMaxPods texts and kMaxPodBytes bytes: past either, the cache is emptied.
// Not thread-safe: one encoder per thread (the pipeline's).
class EventEncoder {
 public:
  static constexpr size_t kMaxImages = 16384;
  static constexpr size_t kMaxImageBytes = 16u << 20;
  static constexpr size_t kMaxPods = 4096;
  static constexpr size_t kMaxPodBytes = 8u << 20;

  // Appends one event as a JSON object followed by '\n'.
  void append_event_line(std::string& out, const ConnectionEvent& event,
                         const EventContext& context, const BootClock& clock);

  // The process holding `pid` exited: its image text is dropped.
  void forget_process(uint32_t pid);

  // What the caches hold (for tests and bounds).
  struct CacheSizes {
    size_t images = 0;
    size_t image_bytes = 0;
    size_t pods = 0;
    size_t pod_bytes = 0;
  };
  CacheSizes cache_sizes() const;

 private:
  const std::string& capability_text(uint64_t caps, int last_cap);
  struct Identity {
    uint32_t pid = 0;
    uint32_t tid = 0;
    uint32_t ppid = 0;
    Credentials credentials;
    int last_cap = 0;
    bool operator==(const Identity&) const = default;
  };
  const std::string& identity_text(const Identity& id);
  const std::string& image_text(const ProcessEntry& entry, const BootClock& clock);
  const std::string& pod_text(const Attribution& a, uint64_t generation, bool with_labels);
  void append_process(std::string& out, const TaskInfo* task, const ProcessEntry* entry,
                      int last_cap, const BootClock& clock, std::string_view container_id = {});

  struct CachedCaps {
    uint64_t caps = 0;
    int last_cap = -1;
    std::string text;
  };
  std::array<CachedCaps, 16> caps_;
  size_t next_caps_ = 0;

  struct CachedIdentity {
    Identity id;
    bool valid = false;
    std::string text;
  };
  std::array<CachedIdentity, 64> identities_;

  struct ImageKey {
    uint64_t fork_start_ns = 0;
    uint64_t image_start_ns = 0;
    int64_t clock_offset_ns = 0;
    bool cloned = false;
    bool operator==(const ImageKey&) const = default;
  };
  struct CachedImage {
    ImageKey key;
    std::string text;
  };
  std::unordered_map<uint32_t, CachedImage> images_;  // by pid
  size_t image_bytes_ = 0;
  std::string uncached_image_;  // an exited process's image

  // Within one generation the snapshot's objects do not move: their addresses name them.
  struct PodKey {
    const PodMeta* pod = nullptr;
    const ContainerMeta* container = nullptr;
    bool labels = false;
    bool operator==(const PodKey&) const = default;
  };
  struct PodKeyHash {
    size_t operator()(const PodKey& k) const {
      return std::hash<const void*>()(k.pod) * 31 + std::hash<const void*>()(k.container) * 2 +
             k.labels;
    }
  };
  struct CachedPod {
    std::string container_id;  // the attribution's, when the container is unknown (null)
    std::string text;
  };
  std::unordered_map<PodKey, CachedPod, PodKeyHash> pods_;
  uint64_t pod_generation_ = 0;
  size_t pod_bytes_ = 0;
};

}  // namespace netmon
