#include "output/json.h"

#include <array>
#include <charconv>
#include <cstdint>
#include <cstring>

#include "events/counters.h"
#include "events/format.h"

namespace netmon {
namespace {

template <typename T>
void append_number(std::string& out, T value) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  (void)ec;
  out.append(buf, end);
}

// Appends "key": in one append (keys are fixed ASCII identifiers, at most 30 bytes).
void append_key(std::string& out, std::string_view key) {
  char buf[32];
  const size_t n = key.size() < sizeof(buf) - 3 ? key.size() : sizeof(buf) - 3;
  buf[0] = '"';
  std::memcpy(buf + 1, key.data(), n);
  buf[n + 1] = '"';
  buf[n + 2] = ':';
  out.append(buf, n + 3);
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not valid.
size_t utf8_sequence_length(std::string_view s, size_t i) {
  const auto c = static_cast<uint8_t>(s[i]);
  size_t len = 0;
  uint32_t min = 0;
  uint32_t cp = 0;
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2, min = 0x80, cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3, min = 0x800, cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4, min = 0x10000, cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    const auto cc = static_cast<uint8_t>(s[i + k]);
    if ((cc & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

void append_u32(std::string& out, std::string_view key, uint32_t value) {
  append_key(out, key);
  append_number(out, value);
  out += ',';
}

void append_caps(std::string& out, std::string_view key, const std::string& text) {
  append_key(out, key);
  out += '"';
  out += text;
  out += "\",";
}

void append_time(std::string& out, std::string_view key, uint64_t boot_ns, const BootClock& clock) {
  append_key(out, key);
  out += '"';
  append_rfc3339_ms(out, clock.to_unix_ns(boot_ns));
  out += '"';
}

// The image fields of a process table entry ("secureexec":...,"parent_exec_id":"...").
void append_image(std::string& f, const ProcessEntry& entry, const BootClock& clock) {
  append_key(f, "secureexec");
  f += '"';
  append_secureexec(f, entry.secureexec);
  f += "\",";
  append_key(f, "filename");
  append_json_string(f, entry.filename);
  f += ',';
  append_key(f, "binary_path");
  append_json_string(f, entry.binary_path);
  f += ',';
  append_key(f, "args");
  append_json_string(f, entry.args);
  f += ',';
  append_time(f, "start_time", entry.image_start_ns, clock);
  f += ',';
  append_key(f, "cloned");
  f += entry.cloned ? "true," : "false,";
  append_key(f, "exec_id");
  append_json_string(f, entry.exec_id);
  f += ',';
  append_key(f, "parent_exec_id");
  append_json_string(f, entry.parent_exec_id);
}

void append_string_field(std::string& out, std::string_view key, std::string_view value) {
  append_key(out, key);
  append_json_string(out, value);
}

// The `pod` object: the pod of the owner's container.
void build_pod(std::string& out, const Attribution& a, bool with_labels) {
  const PodMeta& pod = *a.pod;
  out += '{';
  append_string_field(out, "namespace", pod.namespace_name);
  out += ',';
  append_string_field(out, "name", pod.name);
  out += ',';
  append_string_field(out, "uid", pod.uid);
  out += ',';
  append_string_field(out, "workload", pod.workload);
  out += ',';
  append_string_field(out, "workload_kind", pod.workload_kind);
  out += ',';
  append_key(out, "labels");
  out += '{';
  for (size_t i = 0; with_labels && i < pod.labels.size(); ++i) {
    if (i > 0) out += ',';
    append_json_string(out, pod.labels[i].first);
    out += ':';
    append_json_string(out, pod.labels[i].second);
  }
  out += "},";
  append_key(out, "container");
  out += '{';
  append_string_field(
      out, "id",
      a.container ? std::string_view(a.container->id) : std::string_view(a.container_id));
  if (a.container) {
    out += ',';
    append_string_field(out, "name", a.container->name);
    out += ',';
    append_string_field(out, "image", a.container->image);
    out += ',';
    append_string_field(out, "image_id", a.container->image_id);
  }
  out += "}}";
}

}  // namespace

namespace {

// The fields of a peer after its opening brace: "kind" and the kind's own fields.
void append_peer_fields(std::string& out, const Peer& peer, bool with_labels) {
  append_string_field(out, "kind", to_string(peer.kind));
  auto field = [&out](std::string_view key, std::string_view value) {
    out += ',';
    append_string_field(out, key, value);
  };
  switch (peer.kind) {
    case PeerKind::kPod:
      field("namespace", peer.namespace_name);
      field("name", peer.name);
      field("uid", peer.uid);
      field("workload", peer.workload);
      field("workload_kind", peer.workload_kind);
      if (with_labels) {
        out += ',';
        append_key(out, "labels");
        out += '{';
        for (size_t i = 0; i < peer.labels.size(); ++i) {
          if (i > 0) out += ',';
          append_json_string(out, peer.labels[i].key);
          out += ':';
          append_json_string(out, peer.labels[i].value);
        }
        out += '}';
      }
      break;
    case PeerKind::kService:
      field("namespace", peer.namespace_name);
      field("name", peer.name);
      field("port_name", peer.port_name);
      field("type", peer.service_type);
      break;
    case PeerKind::kNode:
      field("name", peer.name);
      break;
    case PeerKind::kHost:
      break;
    case PeerKind::kExternal:
      field("network", peer.network);
      break;
  }
}

void append_end(std::string& out, std::string_view addr_key, const IpAddress& addr,
                std::string_view port_key, uint16_t port) {
  append_key(out, addr_key);
  out += '"';
  append_address(out, addr);
  out += "\",";
  append_key(out, port_key);
  append_number(out, port);
}

}  // namespace

void append_peer(std::string& out, const Peer& peer, bool with_labels, const NatTranslation* nat,
                 const Peer* backend) {
  out += '{';
  append_peer_fields(out, peer, with_labels);
  if (nat && nat->has_backend) {
    out += ",\"backend\":{";
    append_end(out, "addr", nat->backend_addr, "port", nat->backend_port);
    if (backend) {
      out += ',';
      append_peer_fields(out, *backend, with_labels);
    }
    out += '}';
  }
  if (nat && nat->has_original) {
    out += ",\"original\":{";
    append_end(out, "addr", nat->original_addr, "port", nat->original_port);
    out += ',';
    append_end(out, "dialed_addr", nat->dialed_addr, "dialed_port", nat->dialed_port);
    out += '}';
  }
  out += '}';
}

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    // Copy the longest run of printable ASCII that needs no escape in one append.
    size_t run = i;
    while (run < s.size()) {
      const auto c = static_cast<uint8_t>(s[run]);
      if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') break;
      ++run;
    }
    if (run > i) {
      out.append(s.data() + i, run - i);
      i = run;
      continue;
    }
    const auto c = static_cast<uint8_t>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    if (c >= 0x80) {
      if (const size_t len = utf8_sequence_length(s, i)) {
        out.append(s.substr(i, len));
        i += len;
        continue;
      }
      // A byte that is not part of valid UTF-8: the text \xHH (JSON "\\xHH"), as Python's
      // bytes.decode("utf-8", "backslashreplace") writes it, never a character it is not.
      const char escaped[] = {'\\', '\\', 'x', kHex[c >> 4], kHex[c & 15]};
      out.append(escaped, sizeof(escaped));
      ++i;
      continue;
    }
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        // Control characters: \u00XX.
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 15];
    }
    ++i;
  }
  out += '"';
}

std::string_view event_type_name(ConnKind kind) {
  const size_t i = kind_index(kind);
  return i < kEventTypeNames.size() ? kEventTypeNames[i] : "TcpConnectionUnknown";
}

ConnKind event_kind_of_line(std::string_view line) {
  constexpr std::string_view kKey = "\"network_event\":{\"type\":\"";
  const size_t at = line.find(kKey);
  if (at == std::string_view::npos) return ConnKind::kEstablish;
  const std::string_view type = line.substr(at + kKey.size());
  for (const ConnKind kind :
       {ConnKind::kEstablish, ConnKind::kAccept, ConnKind::kClose, ConnKind::kFailed}) {
    const std::string_view name = event_type_name(kind);
    if (type.starts_with(name) && type.substr(name.size()).starts_with('"')) return kind;
  }
  return ConnKind::kEstablish;
}

// The text of a capability set. A node runs few distinct sets (root's, a few services'), so the
// texts are kept instead of rebuilt from 41 names for every event.
const std::string& EventEncoder::capability_text(uint64_t caps, int last_cap) {
  for (const CachedCaps& e : caps_) {
    if (e.last_cap == last_cap && e.caps == caps) return e.text;
  }
  CachedCaps& e = caps_[next_caps_];
  next_caps_ = (next_caps_ + 1) % caps_.size();
  e.caps = caps;
  e.last_cap = last_cap;
  e.text.clear();
  append_capabilities(e.text, caps, last_cap);
  return e.text;
}

// The identity's JSON text ("pid":1,...,"cap_inheritable":"...",). A node's events come from
// comparatively few threads, and these 11 fields are a third of an event's appends: the texts are
// kept in a direct-mapped table indexed by thread and process id.
const std::string& EventEncoder::identity_text(const Identity& id) {
  CachedIdentity& e = identities_[(id.tid * 0x9e3779b1u ^ id.pid) % identities_.size()];
  if (e.valid && e.id == id) return e.text;
  e.id = id;
  e.valid = true;
  e.text.clear();
  const Credentials& c = id.credentials;
  append_u32(e.text, "pid", id.pid);
  append_u32(e.text, "tid", id.tid);
  append_u32(e.text, "ppid", id.ppid);
  append_u32(e.text, "uid", c.uid);
  append_u32(e.text, "euid", c.euid);
  append_u32(e.text, "gid", c.gid);
  append_u32(e.text, "egid", c.egid);
  append_u32(e.text, "auid", c.auid);
  append_caps(e.text, "cap_effective", capability_text(c.cap_effective, id.last_cap));
  append_caps(e.text, "cap_permitted", capability_text(c.cap_permitted, id.last_cap));
  append_caps(e.text, "cap_inheritable", capability_text(c.cap_inheritable, id.last_cap));
  return e.text;
}

// The image fields only change with the entry (exec and fork replace it) or with the clock
// offset: encode them once and reuse the text for every event of the process.
const std::string& EventEncoder::image_text(const ProcessEntry& entry, const BootClock& clock) {
  if (entry.exited_ns != 0) {
    uncached_image_.clear();
    append_image(uncached_image_, entry, clock);
    return uncached_image_;
  }
  const ImageKey key{entry.fork_start_ns, entry.image_start_ns, clock.unix_ns_at_boot(),
                     entry.cloned};
  auto it = images_.find(entry.pid);
  if (it != images_.end()) {
    if (it->second.key == key) return it->second.text;
    image_bytes_ -= it->second.text.size();
  } else {
    if (images_.size() >= kMaxImages || image_bytes_ >= kMaxImageBytes) {
      images_.clear();
      image_bytes_ = 0;
    }
    it = images_.try_emplace(entry.pid).first;
  }
  CachedImage& c = it->second;
  c.key = key;
  c.text.clear();
  append_image(c.text, entry, clock);
  image_bytes_ += c.text.size();
  return c.text;
}

void EventEncoder::forget_process(uint32_t pid) {
  if (auto it = images_.find(pid); it != images_.end()) {
    image_bytes_ -= it->second.text.size();
    images_.erase(it);
  }
}

// The `pod` object: the pod of the owner's container, built once per pod, container and label
// setting within a pod snapshot, and reused for every event of that container.
const std::string& EventEncoder::pod_text(const Attribution& a, uint64_t generation,
                                          bool with_labels) {
  if (generation != pod_generation_) {
    pods_.clear();
    pod_bytes_ = 0;
    pod_generation_ = generation;
  }
  const PodKey key{a.pod, a.container, with_labels};
  auto it = pods_.find(key);
  if (it != pods_.end()) {
    if (a.container || it->second.container_id == a.container_id) return it->second.text;
    pod_bytes_ -= it->second.text.size();
  } else {
    if (pods_.size() >= kMaxPods || pod_bytes_ >= kMaxPodBytes) {
      pods_.clear();
      pod_bytes_ = 0;
    }
    it = pods_.try_emplace(key).first;
  }
  CachedPod& c = it->second;
  if (a.container) {
    c.container_id.clear();
  } else {
    c.container_id = a.container_id;
  }
  c.text.clear();
  build_pod(c.text, a, with_labels);
  pod_bytes_ += c.text.size();
  return c.text;
}

EventEncoder::CacheSizes EventEncoder::cache_sizes() const {
  return CacheSizes{images_.size(), image_bytes_, pods_.size(), pod_bytes_};
}

// The process object. `task` (the record's view, may be null) supplies ids, credentials and
// capabilities; `entry` (the table's, may be null) the image fields. At least one is set.
void EventEncoder::append_process(std::string& out, const TaskInfo* task, const ProcessEntry* entry,
                                  int last_cap, const BootClock& clock,
                                  std::string_view container_id) {
  out += '{';
  if (task) {
    out += identity_text(Identity{task->pid, task->tid, task->ppid, *task, last_cap});
  } else {
    out += identity_text(Identity{entry->pid, entry->pid, entry->ppid, *entry, last_cap});
  }
  if (entry) {
    out += image_text(*entry, clock);
  } else {
    // Not in the process table: what the kernel record knows.
    append_key(out, "filename");
    append_json_string(out, task->comm_view());
    out += ',';
    append_time(out, "start_time", task->start_ns, clock);
    out += ',';
    append_key(out, "exec_id");
    append_json_string(out, make_exec_id(task->pid, task->start_ns));
  }
  if (!container_id.empty()) {
    out += ',';
    append_key(out, "container_id");
    append_json_string(out, container_id);
  }
  out += '}';
}

void EventEncoder::append_event_line(std::string& out, const ConnectionEvent& e,
                                     const EventContext& context, const BootClock& clock) {
  // Constant keys and punctuation go out joined, one append each: appends are most of the cost.
  out += "{\"type\":\"NetworkEvent\",\"timestamp\":\"";
  append_rfc3339_ms(out, clock.to_unix_ns(e.boot_ns));
  out += "\",\"network_event\":{\"type\":\"";
  out += event_type_name(e.kind);
  out += "\",\"saddr\":\"";
  append_address(out, e.saddr);
  out += "\",\"sport\":";
  append_number(out, e.sport);
  out += ",\"daddr\":\"";
  append_address(out, e.daddr);
  out += "\",\"dport\":";
  append_number(out, e.dport);
  if (context.peer) {
    out += ",\"peer\":";
    append_peer(out, *context.peer, context.peer_labels, context.nat, context.backend);
  }
  out += ",\"cookie\":";
  append_number(out, e.cookie);
  if (e.kind == ConnKind::kFailed) {
    out += ",\"error\":\"";
    out += connect_error_name(e.error);
    out += '"';
  }
  if (e.kind == ConnKind::kClose) {
    out += e.direction == Direction::kOutbound ? ",\"direction\":\"outbound\",\"bytes_sent\":"
                                               : ",\"direction\":\"inbound\",\"bytes_sent\":";
    append_number(out, e.close.bytes_sent);
    out += ",\"bytes_received\":";
    append_number(out, e.close.bytes_received);
    out += ",\"duration_ms\":";
    append_number(out, e.duration_ms());
    if (e.open_from_agent) out += ",\"duration_from_agent_start\":true";
    out += ",\"srtt_us\":";
    append_number(out, e.close.srtt_us);
    out += ",\"retransmits\":";
    append_number(out, e.close.retransmits);
    out += e.close.closed_by == ClosedBy::kRemote ? ",\"closed_by\":\"remote\",\"reset\":"
                                                  : ",\"closed_by\":\"local\",\"reset\":";
    out += e.close.reset ? "true" : "false";
  }
  if (e.preexisting) {  // the snapshot's open event: the statistics so far (issue #21)
    out += ",\"preexisting\":true,\"bytes_sent\":";
    append_number(out, e.close.bytes_sent);
    out += ",\"bytes_received\":";
    append_number(out, e.close.bytes_received);
    out += ",\"srtt_us\":";
    append_number(out, e.close.srtt_us);
    out += ",\"retransmits\":";
    append_number(out, e.close.retransmits);
  }
  out += "},\"process\":";
  const std::string_view container_id =
      context.attribution ? std::string_view(context.attribution->container_id) : "";
  if (e.owner_known) {
    append_process(out, &e.task, context.process, context.last_cap, clock, container_id);
  } else if (context.process) {
    append_process(out, nullptr, context.process, context.last_cap, clock, container_id);
  } else {
    out += "null";
  }
  out += ",\"parent\":";
  if (context.parent) {
    append_process(out, nullptr, context.parent, context.last_cap, clock);
  } else {
    out += "null";
  }
  if (context.attribution && context.attribution->pod) {
    out += ',';
    append_key(out, "pod");
    out += pod_text(*context.attribution, context.pod_generation, context.pod_labels);
  }
  if (!context.node_name.empty()) {
    out += ',';
    append_string_field(out, "node_name", context.node_name);
  }
  if (!context.rule.empty()) {
    out += ',';
    append_string_field(out, "rule", context.rule);
  }
  out += "}\n";
}

}  // namespace netmon
