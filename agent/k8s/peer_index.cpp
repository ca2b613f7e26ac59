#include "k8s/peer_index.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <tuple>

namespace netmon {

namespace {

constexpr std::string_view kInternet = "internet";
constexpr uint64_t kPresent = UINT64_MAX;

// An address as a hashable, comparable key (canonical: bytes past the family's length are zero).
struct AddressKey {
  std::array<uint8_t, 16> bytes{};
  IpAddress::Family family = IpAddress::Family::kV4;

  static AddressKey of(const IpAddress& address) {
    const IpAddress c = canonical_address(address);
    return AddressKey{c.bytes, c.family};
  }
  friend bool operator==(const AddressKey& a, const AddressKey& b) {
    return a.family == b.family && a.bytes == b.bytes;
  }
  friend bool operator<(const AddressKey& a, const AddressKey& b) {
    return std::tie(a.family, a.bytes) < std::tie(b.family, b.bytes);
  }
};

uint64_t hash_address(const std::array<uint8_t, 16>& bytes, IpAddress::Family family) {
  uint64_t lo = 0;
  uint64_t hi = 0;
  std::memcpy(&lo, bytes.data(), 8);
  std::memcpy(&hi, bytes.data() + 8, 8);
  uint64_t h = (lo ^ (static_cast<uint64_t>(family) << 56)) * 0x9E3779B97F4A7C15ull;
  h ^= (hi + 0x632BE59BD9B4E019ull) * 0xC2B2AE3D27D4EB4Full;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  return h;
}

// A hash -> a slot of a table of any size (Lemire's multiply-shift range reduction).
__extension__ typedef unsigned __int128 Uint128;
size_t slot_of(uint64_t hash, size_t capacity) {
  return static_cast<size_t>((static_cast<Uint128>(hash) * capacity) >> 64);
}

bool is_loopback(const IpAddress& canonical) {
  if (canonical.family == IpAddress::Family::kV4) return canonical.bytes[0] == 127;
  static constexpr std::array<uint8_t, 16> kV6Loopback = {0, 0, 0, 0, 0, 0, 0, 0,
                                                          0, 0, 0, 0, 0, 0, 0, 1};
  return canonical.bytes == kV6Loopback;
}

bool is_tcp(const std::string& protocol) { return protocol.empty() || protocol == "TCP"; }

// What the state keeps of an EndpointSlice: per endpoint that names a pod, its first address
// (the API: an endpoint's addresses are fungible and consumers may use only the first; the
// slice controller writes one) and what names it, compactly: 100 000 endpoints are the bulk of
// the state. The names of all of a slice's endpoints share one string.
struct StoredEndpoint {
  IpAddress address;  // canonical
  bool terminating = false;
  uint16_t uid_size = 0;
  uint16_t name_size = 0;
  uint16_t namespace_size = 0;  // 0: the slice's namespace
  uint32_t offset = 0;          // of the uid in StoredSlice::refs; the name and namespace follow
  uint64_t since_ns = 0;        // when this (address, pod) claim first appeared
};

struct StoredSlice {
  std::string namespace_name;
  std::string refs;
  std::vector<StoredEndpoint> endpoints;
  std::vector<uint16_t> tcp_ports;  // the slice's TCP ports (host-network endpoints)

  std::string_view uid(const StoredEndpoint& e) const {
    return std::string_view(refs).substr(e.offset, e.uid_size);
  }
  std::string_view name(const StoredEndpoint& e) const {
    return std::string_view(refs).substr(e.offset + e.uid_size, e.name_size);
  }
  std::string_view namespace_of(const StoredEndpoint& e) const {
    if (e.namespace_size == 0) return namespace_name;
    return std::string_view(refs).substr(e.offset + e.uid_size + e.name_size, e.namespace_size);
  }
};

struct StoredPod {
  KubePod pod;                  // pod_ips canonical
  std::vector<uint64_t> since;  // per pod_ips entry, when its claim first appeared
};

bool claims_ips(const KubePod& pod) {
  // Host-network pods have their node's IP: they claim (address, port) pairs instead, at build
  // time; terminal pods have released their IP.
  return !pod.host_network && !pod.terminal;
}

KubeService compact(KubeService&& service) { return std::move(service); }
KubeNode compact(KubeNode&& node) { return std::move(node); }

StoredPod compact(KubePod&& pod) {
  StoredPod stored;
  stored.pod = std::move(pod);
  for (IpAddress& ip : stored.pod.pod_ips) ip = canonical_address(ip);
  stored.since.assign(stored.pod.pod_ips.size(), 0);
  return stored;
}

StoredSlice compact(KubeEndpointSlice&& slice) {
  StoredSlice stored;
  stored.namespace_name = std::move(slice.namespace_name);
  if (slice.address_type == KubeAddressType::kFQDN) return stored;
  auto names_pod = [](const KubeEndpoint& e) {
    return e.target && e.target->kind == "Pod" && !e.target->uid.empty() && !e.addresses.empty();
  };
  // Names longer than the parser's bound (kKubeMaxStringBytes) cannot come from the API; cut.
  auto part = [](const std::string& text) {
    return std::string_view(text).substr(0, std::min<size_t>(text.size(), UINT16_MAX));
  };
  size_t count = 0;
  size_t bytes = 0;
  for (const KubeEndpoint& e : slice.endpoints) {
    if (!names_pod(e)) continue;
    ++count;
    bytes += part(e.target->uid).size() + part(e.target->name).size();
    if (e.target->namespace_name != stored.namespace_name) {
      bytes += part(e.target->namespace_name).size();
    }
  }
  stored.endpoints.reserve(count);
  stored.refs.reserve(bytes);
  for (const KubeEndpoint& e : slice.endpoints) {
    if (!names_pod(e)) continue;
    StoredEndpoint se;
    se.address = canonical_address(e.addresses[0]);
    se.terminating = e.conditions.terminating;
    se.offset = static_cast<uint32_t>(stored.refs.size());
    const std::string_view uid = part(e.target->uid);
    const std::string_view name = part(e.target->name);
    se.uid_size = static_cast<uint16_t>(uid.size());
    se.name_size = static_cast<uint16_t>(name.size());
    stored.refs.append(uid).append(name);
    if (e.target->namespace_name != stored.namespace_name) {
      const std::string_view ns = part(e.target->namespace_name);
      se.namespace_size = static_cast<uint16_t>(ns.size());
      stored.refs.append(ns);
    }
    stored.endpoints.push_back(se);
  }
  for (const KubeEndpointPort& port : slice.ports) {
    if (port.port != 0 && is_tcp(port.protocol)) stored.tcp_ports.push_back(port.port);
  }
  return stored;
}

// One pod IP claim of a stored object, for the diff between an object's old and new forms.
struct ClaimView {
  AddressKey key;
  std::string_view uid;
  std::string_view namespace_name;
  std::string_view name;
  uint64_t* since_ns;
};

void claim_views(KubeService&, std::vector<ClaimView>&) {}
void claim_views(KubeNode&, std::vector<ClaimView>&) {}
void claim_views(StoredPod& stored, std::vector<ClaimView>& out) {
  if (!claims_ips(stored.pod)) return;
  for (size_t i = 0; i < stored.pod.pod_ips.size(); ++i) {
    out.push_back(ClaimView{AddressKey{stored.pod.pod_ips[i].bytes, stored.pod.pod_ips[i].family},
                            stored.pod.uid, stored.pod.namespace_name, stored.pod.name,
                            &stored.since[i]});
  }
}
void claim_views(StoredSlice& stored, std::vector<ClaimView>& out) {
  for (StoredEndpoint& e : stored.endpoints) {
    out.push_back(ClaimView{AddressKey{e.address.bytes, e.address.family}, stored.uid(e),
                            stored.namespace_of(e), stored.name(e), &e.since_ns});
  }
}

std::string_view uid_of(const KubeService& s) { return s.uid; }
std::string_view uid_of(const KubeNode& n) { return n.uid; }
std::string_view uid_of(const KubePod& p) { return p.uid; }
std::string_view uid_of(const KubeEndpointSlice& s) { return s.uid; }

}  // namespace

// ---- ClusterState ------------------------------------------------------------------------------

struct ClusterState::Impl {
  // A pod claim no object shows any more, kept for the grace period with what named it.
  struct GoneClaim {
    IpAddress address;
    std::string namespace_name, name, uid, workload, workload_kind;
    KubeLabels labels;
    uint64_t since_ns = 0;
    uint64_t gone_ns = 0;
  };

  PeerIndexOptions options;
  std::unordered_map<std::string, KubeService> services;
  std::unordered_map<std::string, StoredSlice> slices;
  std::unordered_map<std::string, KubeNode> nodes;
  std::unordered_map<std::string, StoredPod> pods;        // the pods watch
  std::unordered_map<std::string, StoredPod> local_pods;  // this node's kubelet
  std::vector<GoneClaim> gone;

  const KubePod* pod_by_uid(std::string_view uid) const {
    auto it = pods.find(std::string(uid));
    if (it != pods.end()) return &it->second.pod;
    it = local_pods.find(std::string(uid));
    return it != local_pods.end() ? &it->second.pod : nullptr;
  }

  void record_gone(const ClaimView& claim, uint64_t now_ns) {
    GoneClaim g;
    g.address.family = claim.key.family;
    g.address.bytes = claim.key.bytes;
    g.uid = claim.uid;
    g.namespace_name = claim.namespace_name;
    g.name = claim.name;
    if (const KubePod* pod = pod_by_uid(claim.uid)) {
      g.workload = pod->workload;
      g.workload_kind = pod->workload_kind;
      g.labels = pod->labels;
    }
    g.since_ns = *claim.since_ns;
    g.gone_ns = now_ns;
    gone.push_back(std::move(g));
  }

  // `next` replaces `old` (either may be null): claims both show keep their age, new ones date
  // from now, and the ones only `old` shows are gone from now.
  template <typename S>
  void diff(S* next, S* old, uint64_t now_ns) {
    std::vector<ClaimView> before;
    std::vector<ClaimView> after;
    if (old != nullptr) claim_views(*old, before);
    if (next != nullptr) claim_views(*next, after);
    if (before.empty() && after.empty()) return;
    auto less = [](const ClaimView& a, const ClaimView& b) {
      return std::tie(a.key, a.uid) < std::tie(b.key, b.uid);
    };
    std::sort(before.begin(), before.end(), less);
    std::vector<bool> kept(before.size(), false);
    for (ClaimView& claim : after) {
      auto it = std::lower_bound(before.begin(), before.end(), claim, less);
      if (it != before.end() && !less(claim, *it)) {
        *claim.since_ns = *it->since_ns;
        kept[static_cast<size_t>(it - before.begin())] = true;
      } else {
        *claim.since_ns = now_ns;
      }
    }
    for (size_t i = 0; i < before.size(); ++i) {
      if (!kept[i]) record_gone(before[i], now_ns);
    }
  }

  // A list (or a paged list's pages) compacted into `next`, aside from the current objects.
  template <typename S, typename T>
  static void stage(std::unordered_map<std::string, S>& next, std::vector<T> items) {
    next.reserve(next.size() + items.size());
    for (T& item : items) {
      std::string uid(uid_of(item));
      if (next.count(uid) != 0) continue;  // one object per uid: the first
      next.emplace(std::move(uid), compact(std::move(item)));
    }
  }

  // `next` replaces all of `store`.
  template <typename S>
  void commit(std::unordered_map<std::string, S>& store, std::unordered_map<std::string, S> next,
              uint64_t now_ns) {
    for (auto& [uid, stored] : next) {
      auto old = store.find(uid);
      diff(&stored, old == store.end() ? nullptr : &old->second, now_ns);
      if (old != store.end()) store.erase(old);
    }
    for (auto& [uid, old] : store) diff<S>(nullptr, &old, now_ns);  // not listed any more
    store = std::move(next);
  }

  template <typename S, typename T>
  void replace(std::unordered_map<std::string, S>& store, std::vector<T> items, uint64_t now_ns) {
    std::unordered_map<std::string, S> next;
    stage(next, std::move(items));
    commit(store, std::move(next), now_ns);
  }

  // Per resource type: its objects, and a paged list being built.
  auto& objects_of(KubeService*) { return services; }
  auto& objects_of(KubeEndpointSlice*) { return slices; }
  auto& objects_of(KubeNode*) { return nodes; }
  auto& objects_of(KubePod*) { return pods; }
  auto& staged_of(KubeService*) { return staged_services; }
  auto& staged_of(KubeEndpointSlice*) { return staged_slices; }
  auto& staged_of(KubeNode*) { return staged_nodes; }
  auto& staged_of(KubePod*) { return staged_pods; }
  std::unordered_map<std::string, KubeService> staged_services;
  std::unordered_map<std::string, StoredSlice> staged_slices;
  std::unordered_map<std::string, KubeNode> staged_nodes;
  std::unordered_map<std::string, StoredPod> staged_pods;

  template <typename S, typename T>
  void apply(std::unordered_map<std::string, S>& store, WatchOp op, T object, uint64_t now_ns) {
    auto it = store.find(std::string(uid_of(object)));
    if (op == WatchOp::kDeleted) {
      if (it == store.end()) return;
      diff<S>(nullptr, &it->second, now_ns);
      store.erase(it);
      return;
    }
    std::string uid(uid_of(object));
    S stored = compact(std::move(object));
    if (it != store.end()) {
      diff(&stored, &it->second, now_ns);
      it->second = std::move(stored);
    } else {
      diff<S>(&stored, nullptr, now_ns);
      store.emplace(std::move(uid), std::move(stored));
    }
  }
};

ClusterState::ClusterState(PeerIndexOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
}
ClusterState::~ClusterState() = default;

void ClusterState::replace_services(std::vector<KubeService> items, uint64_t now_ns) {
  impl_->replace(impl_->services, std::move(items), now_ns);
}
void ClusterState::replace_endpoint_slices(std::vector<KubeEndpointSlice> items, uint64_t now_ns) {
  impl_->replace(impl_->slices, std::move(items), now_ns);
}
void ClusterState::replace_nodes(std::vector<KubeNode> items, uint64_t now_ns) {
  impl_->replace(impl_->nodes, std::move(items), now_ns);
}
void ClusterState::replace_pods(std::vector<KubePod> items, uint64_t now_ns) {
  impl_->replace(impl_->pods, std::move(items), now_ns);
}
void ClusterState::replace_local_pods(std::vector<KubePod> items, uint64_t now_ns) {
  impl_->replace(impl_->local_pods, std::move(items), now_ns);
}
void ClusterState::apply(WatchOp op, KubeService object, uint64_t now_ns) {
  impl_->apply(impl_->services, op, std::move(object), now_ns);
}
void ClusterState::apply(WatchOp op, KubeEndpointSlice object, uint64_t now_ns) {
  impl_->apply(impl_->slices, op, std::move(object), now_ns);
}
void ClusterState::apply(WatchOp op, KubeNode object, uint64_t now_ns) {
  impl_->apply(impl_->nodes, op, std::move(object), now_ns);
}
void ClusterState::apply(WatchOp op, KubePod object, uint64_t now_ns) {
  impl_->apply(impl_->pods, op, std::move(object), now_ns);
}

template <typename T>
void ClusterState::add_list_page(std::vector<T> items) {
  Impl::stage(impl_->staged_of(static_cast<T*>(nullptr)), std::move(items));
}
template <typename T>
void ClusterState::finish_list(uint64_t now_ns) {
  auto& staged = impl_->staged_of(static_cast<T*>(nullptr));
  impl_->commit(impl_->objects_of(static_cast<T*>(nullptr)), std::move(staged), now_ns);
  staged.clear();  // moved from: valid, made empty
}
template <typename T>
void ClusterState::abandon_list() {
  impl_->staged_of(static_cast<T*>(nullptr)).clear();
}
template void ClusterState::add_list_page(std::vector<KubeService>);
template void ClusterState::add_list_page(std::vector<KubeEndpointSlice>);
template void ClusterState::add_list_page(std::vector<KubeNode>);
template void ClusterState::add_list_page(std::vector<KubePod>);
template void ClusterState::finish_list<KubeService>(uint64_t);
template void ClusterState::finish_list<KubeEndpointSlice>(uint64_t);
template void ClusterState::finish_list<KubeNode>(uint64_t);
template void ClusterState::finish_list<KubePod>(uint64_t);
template void ClusterState::abandon_list<KubeService>();
template void ClusterState::abandon_list<KubeEndpointSlice>();
template void ClusterState::abandon_list<KubeNode>();
template void ClusterState::abandon_list<KubePod>();

void ClusterState::set_host_addresses(std::vector<IpAddress> addresses) {
  impl_->options.host_addresses = std::move(addresses);
}
void ClusterState::set_external_networks(CidrClasses classes) {
  impl_->options.external_networks = std::move(classes);
}

size_t ClusterState::service_count() const { return impl_->services.size(); }
size_t ClusterState::endpoint_slice_count() const { return impl_->slices.size(); }
size_t ClusterState::node_count() const { return impl_->nodes.size(); }
size_t ClusterState::pod_count() const { return impl_->pods.size() + impl_->local_pods.size(); }

// ---- building a snapshot -----------------------------------------------------------------------

class PeerIndexBuilder {
 public:
  explicit PeerIndexBuilder(PeerIndex& index) : index_(index) {}

  using Str = PeerIndex::Str;
  using Claim = PeerIndex::Claim;
  using ClaimKind = PeerIndex::ClaimKind;

  Str add(std::string_view text) {
    Str s{static_cast<uint32_t>(index_.arena_.size()), static_cast<uint32_t>(text.size())};
    index_.arena_.append(text);
    return s;
  }
  // Strings that repeat across records (namespaces, kinds, label keys and values) are stored
  // once.
  Str intern(std::string_view text) {
    auto it = interned_.find(text);
    if (it != interned_.end()) return it->second;
    Str s = add(text);
    interned_.emplace(std::string(text), s);
    return s;
  }

  void add_claim(const IpAddress& ip, Claim claim) {
    pending_.push_back(Pending{AddressKey::of(ip), claim});
  }

  // The pod record of `uid`, created by `fill` the first time.
  // `uid` must outlive the builder (it points into the state).
  template <typename Fill>
  uint32_t pod(std::string_view uid, Fill&& fill) {
    auto it = pod_by_uid_.find(uid);
    if (it != pod_by_uid_.end()) return it->second;
    PeerIndex::PodRecord record;
    fill(record);
    const auto index = static_cast<uint32_t>(index_.pods_.size());
    index_.pods_.push_back(record);
    pod_by_uid_.emplace(uid, index);
    return index;
  }

  void labels(PeerIndex::PodRecord& record, const KubeLabels& labels) {
    record.labels_begin = static_cast<uint32_t>(label_refs_.size());
    record.labels_count = static_cast<uint32_t>(labels.size());
    for (const auto& [k, v] : labels) label_refs_.emplace_back(intern(k), intern(v));
  }

  void finish() {
    // Labels become views once the arena no longer grows (nor moves: shrinking it comes first).
    index_.arena_.shrink_to_fit();
    index_.labels_.reserve(label_refs_.size());
    for (const auto& [k, v] : label_refs_) {
      index_.labels_.push_back(PeerLabel{index_.str(k), index_.str(v)});
    }

    std::sort(pending_.begin(), pending_.end(), [](const Pending& a, const Pending& b) {
      return std::tie(a.key, a.claim.kind, a.claim.target, a.claim.port, a.claim.gone_ns,
                      a.claim.since_ns) < std::tie(b.key, b.claim.kind, b.claim.target,
                                                   b.claim.port, b.claim.gone_ns, b.claim.since_ns);
    });
    // Equal claims (a pod in two slices, or in a slice and the pods watch) are kept once, with
    // the earliest appearance.
    pending_.erase(std::unique(pending_.begin(), pending_.end(),
                               [](const Pending& a, const Pending& b) {
                                 return a.key == b.key && a.claim.kind == b.claim.kind &&
                                        a.claim.target == b.claim.target &&
                                        a.claim.port == b.claim.port &&
                                        a.claim.gone_ns == b.claim.gone_ns;
                               }),
                   pending_.end());

    size_t distinct = 0;
    for (size_t i = 0; i < pending_.size(); ++i) {
      if (i == 0 || !(pending_[i].key == pending_[i - 1].key)) ++distinct;
    }
    // At most two thirds full: linear probing stays short.
    const size_t capacity = distinct + distinct / 2 + 16;
    index_.slots_.assign(capacity, PeerIndex::Slot{});
    index_.claims_.reserve(pending_.size());
    for (size_t i = 0; i < pending_.size();) {
      size_t end = i;
      while (end < pending_.size() && pending_[end].key == pending_[i].key) ++end;
      const size_t count = std::min<size_t>(end - i, UINT16_MAX);
      size_t slot = slot_of(hash_address(pending_[i].key.bytes, pending_[i].key.family), capacity);
      while (index_.slots_[slot].claims_count != 0) slot = slot + 1 == capacity ? 0 : slot + 1;
      PeerIndex::Slot& s = index_.slots_[slot];
      s.bytes = pending_[i].key.bytes;
      s.family = pending_[i].key.family;
      s.claims_begin = static_cast<uint32_t>(index_.claims_.size());
      s.claims_count = static_cast<uint16_t>(count);
      for (size_t c = i; c < i + count; ++c) index_.claims_.push_back(pending_[c].claim);
      i = end;
    }
    std::sort(index_.node_ports_.begin(), index_.node_ports_.end(),
              [](const auto& a, const auto& b) {
                return std::tie(a.node_port, a.service) < std::tie(b.node_port, b.service);
              });

    PeerIndex::Stats& st = index_.stats_;
    st.addresses = distinct;
    st.claims = index_.claims_.size();
    st.pods = index_.pods_.size();
    st.services = index_.services_.size();
    st.nodes = index_.nodes_.size();
    st.gone_pod_claims =
        static_cast<size_t>(std::count_if(index_.claims_.begin(), index_.claims_.end(),
                                          [](const Claim& c) { return c.gone_ns != kPresent; }));
    st.memory_bytes = index_.arena_.capacity() + index_.labels_.capacity() * sizeof(PeerLabel) +
                      index_.pods_.capacity() * sizeof(PeerIndex::PodRecord) +
                      index_.services_.capacity() * sizeof(PeerIndex::ServiceRecord) +
                      index_.service_ports_.capacity() * sizeof(PeerIndex::ServicePortRecord) +
                      index_.nodes_.capacity() * sizeof(PeerIndex::NodeRecord) +
                      index_.claims_.capacity() * sizeof(Claim) +
                      index_.slots_.capacity() * sizeof(PeerIndex::Slot) +
                      index_.node_ports_.capacity() * sizeof(PeerIndex::NodePortRecord) +
                      index_.host_addresses_.capacity() * sizeof(IpAddress);
  }

 private:
  struct Pending {
    AddressKey key;
    Claim claim;
  };
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  PeerIndex& index_;
  std::unordered_map<std::string, Str, StringHash, std::equal_to<>> interned_;
  std::unordered_map<std::string_view, uint32_t> pod_by_uid_;
  std::vector<std::pair<Str, Str>> label_refs_;
  std::vector<Pending> pending_;
};

std::shared_ptr<const PeerIndex> ClusterState::build(uint64_t now_ns) {
  Impl& st = *impl_;
  const uint64_t grace = st.options.pod_grace_ns;
  st.gone.erase(std::remove_if(st.gone.begin(), st.gone.end(),
                               [&](const Impl::GoneClaim& g) {
                                 return now_ns >= g.gone_ns && now_ns - g.gone_ns >= grace;
                               }),
                st.gone.end());

  auto index = std::make_shared<PeerIndex>();
  PeerIndexBuilder b(*index);
  using ClaimKind = PeerIndex::ClaimKind;
  using Claim = PeerIndex::Claim;

  for (const IpAddress& ip : st.options.host_addresses) {
    index->host_addresses_.push_back(canonical_address(ip));
  }
  index->external_networks_ = st.options.external_networks;

  // Nodes, and the set of node addresses (a pod IP there is a host-network pod's).
  std::vector<AddressKey> node_addresses;
  index->nodes_.reserve(st.nodes.size());
  for (const auto& [uid, node] : st.nodes) {
    const auto n = static_cast<uint32_t>(index->nodes_.size());
    index->nodes_.push_back(PeerIndex::NodeRecord{b.add(node.name), b.add(node.uid)});
    for (const KubeNodeAddress& address : node.addresses) {
      if (!address.ip) continue;
      node_addresses.push_back(AddressKey::of(*address.ip));
      Claim c;
      c.kind = ClaimKind::kNode;
      c.target = n;
      b.add_claim(*address.ip, c);
    }
  }
  std::sort(node_addresses.begin(), node_addresses.end());
  auto is_node_address = [&](const IpAddress& ip) {
    return std::binary_search(node_addresses.begin(), node_addresses.end(), AddressKey::of(ip));
  };

  // Services.
  index->services_.reserve(st.services.size());
  for (const auto& [uid, service] : st.services) {
    if (service.type == KubeServiceType::kExternalName) continue;
    const bool has_address = !service.cluster_ips.empty() || !service.external_ips.empty() ||
                             !service.ingress_ips.empty();
    bool has_node_port = false;
    for (const KubeServicePort& p : service.ports) has_node_port |= p.node_port != 0;
    if (!has_address && !has_node_port) continue;  // headless: its endpoints name the pods
    PeerIndex::ServiceRecord record;
    record.namespace_name = b.intern(service.namespace_name);
    record.name = b.add(service.name);
    record.uid = b.add(service.uid);
    record.type = service.type;
    record.ports_begin = static_cast<uint32_t>(index->service_ports_.size());
    const auto s = static_cast<uint32_t>(index->services_.size());
    for (const KubeServicePort& p : service.ports) {
      if (!is_tcp(p.protocol)) continue;
      if (p.node_port != 0 && service.type != KubeServiceType::kClusterIP) {
        index->node_ports_.push_back(PeerIndex::NodePortRecord{
            p.node_port, s, static_cast<uint32_t>(index->service_ports_.size())});
      }
      index->service_ports_.push_back(PeerIndex::ServicePortRecord{b.intern(p.name), p.port});
    }
    record.ports_count = static_cast<uint32_t>(index->service_ports_.size()) - record.ports_begin;
    index->services_.push_back(record);
    auto claim = [&](const std::vector<IpAddress>& ips, ClaimKind kind) {
      for (const IpAddress& ip : ips) {
        Claim c;
        c.kind = kind;
        c.target = s;
        b.add_claim(ip, c);
      }
    };
    claim(service.cluster_ips, ClaimKind::kClusterIP);
    claim(service.external_ips, ClaimKind::kExternalIP);
    claim(service.ingress_ips, ClaimKind::kIngressIP);
  }

  // Pods: records from the Pod objects first (they know workload and labels). `pod`: a KubePod,
  // or a gone claim (it keeps the same fields).
  auto pod_record = [&](const auto& pod) {
    return b.pod(pod.uid, [&](PeerIndex::PodRecord& r) {
      r.namespace_name = b.intern(pod.namespace_name);
      r.name = b.add(pod.name);
      r.uid = b.add(pod.uid);
      r.workload = b.intern(pod.workload);
      r.workload_kind = b.intern(pod.workload_kind);
      b.labels(r, pod.labels);
    });
  };
  auto host_port = [&](const IpAddress& ip, uint32_t pod, uint16_t port) {
    Claim c;
    c.kind = ClaimKind::kHostPort;
    c.target = pod;
    c.port = port;
    b.add_claim(ip, c);
  };
  auto pod_claim = [&](const IpAddress& ip, uint32_t pod, uint64_t since_ns, bool terminating,
                       uint64_t gone_ns = UINT64_MAX) {
    Claim c;
    c.kind = ClaimKind::kPod;
    c.target = pod;
    c.since_ns = since_ns;
    c.gone_ns = gone_ns;
    c.terminating = terminating;
    b.add_claim(ip, c);
  };
  for (const auto* store : {&st.pods, &st.local_pods}) {
    for (const auto& [uid, stored] : *store) {
      const KubePod& pod = stored.pod;
      if (pod.terminal) continue;
      const uint32_t p = pod_record(pod);
      for (size_t i = 0; i < pod.pod_ips.size(); ++i) {
        const IpAddress& ip = pod.pod_ips[i];
        if (pod.host_network || is_node_address(ip)) {
          for (const KubeContainerPort& port : pod.ports) {
            if (is_tcp(port.protocol)) host_port(ip, p, port.port);
          }
        } else {
          pod_claim(ip, p, stored.since[i], pod.terminating);
        }
      }
    }
  }
  // Pods named by EndpointSlices.
  for (const auto& [uid, slice] : st.slices) {
    for (const StoredEndpoint& endpoint : slice.endpoints) {
      const uint32_t p = b.pod(slice.uid(endpoint), [&](PeerIndex::PodRecord& r) {
        r.namespace_name = b.intern(slice.namespace_of(endpoint));
        r.name = b.add(slice.name(endpoint));
        r.uid = b.add(slice.uid(endpoint));
      });
      if (is_node_address(endpoint.address)) {
        for (uint16_t port : slice.tcp_ports) host_port(endpoint.address, p, port);
      } else {
        pod_claim(endpoint.address, p, endpoint.since_ns, endpoint.terminating);
      }
    }
  }
  // Gone pod claims in their grace period (never on a node address: those are host-network).
  for (const Impl::GoneClaim& g : st.gone) {
    if (is_node_address(g.address)) continue;
    pod_claim(g.address, pod_record(g), g.since_ns, false, g.gone_ns);
  }

  b.finish();
  return index;
}

// ---- lookup ------------------------------------------------------------------------------------

const PeerIndex::Slot* PeerIndex::find(const IpAddress& canonical) const noexcept {
  if (slots_.empty()) return nullptr;
  const size_t capacity = slots_.size();
  size_t slot = slot_of(hash_address(canonical.bytes, canonical.family), capacity);
  while (slots_[slot].claims_count != 0) {
    const Slot& s = slots_[slot];
    if (s.family == canonical.family && s.bytes == canonical.bytes) return &s;
    slot = slot + 1 == capacity ? 0 : slot + 1;
  }
  return nullptr;
}

Peer PeerIndex::pod_peer(uint32_t pod) const noexcept {
  const PodRecord& r = pods_[pod];
  Peer peer;
  peer.kind = PeerKind::kPod;
  peer.namespace_name = str(r.namespace_name);
  peer.name = str(r.name);
  peer.uid = str(r.uid);
  peer.workload = str(r.workload);
  peer.workload_kind = str(r.workload_kind);
  peer.labels = std::span<const PeerLabel>(labels_.data() + r.labels_begin, r.labels_count);
  return peer;
}

Peer PeerIndex::service_peer(uint32_t service, uint16_t port,
                             std::string_view type) const noexcept {
  const ServiceRecord& r = services_[service];
  Peer peer;
  peer.kind = PeerKind::kService;
  peer.namespace_name = str(r.namespace_name);
  peer.name = str(r.name);
  peer.uid = str(r.uid);
  peer.service_type = type;
  for (uint32_t i = r.ports_begin; i < r.ports_begin + r.ports_count; ++i) {
    if (service_ports_[i].port == port) {
      peer.port_name = str(service_ports_[i].name);
      break;
    }
  }
  return peer;
}

bool PeerIndex::service_has_port(uint32_t service, uint16_t port) const noexcept {
  const ServiceRecord& r = services_[service];
  for (uint32_t i = r.ports_begin; i < r.ports_begin + r.ports_count; ++i) {
    if (service_ports_[i].port == port) return true;
  }
  return false;
}

Peer PeerIndex::lookup(const IpAddress& remote, uint16_t port, uint64_t opened_ns) const noexcept {
  const IpAddress address = canonical_address(remote);
  Peer peer;
  // 1. This node.
  if (is_loopback(address)) {
    peer.kind = PeerKind::kHost;
    return peer;
  }
  for (const IpAddress& own : host_addresses_) {
    if (own.family == address.family && own.bytes == address.bytes) {
      peer.kind = PeerKind::kHost;
      return peer;
    }
  }

  if (const Slot* slot = find(address)) {
    const std::span<const Claim> claims(claims_.data() + slot->claims_begin, slot->claims_count);
    // 2. A cluster IP.
    for (const Claim& c : claims) {
      if (c.kind == ClaimKind::kClusterIP) return service_peer(c.target, port, "ClusterIP");
    }
    // 3. An external or load-balancer IP on one of the service's ports.
    for (const Claim& c : claims) {
      if ((c.kind == ClaimKind::kExternalIP || c.kind == ClaimKind::kIngressIP) &&
          service_has_port(c.target, port)) {
        return service_peer(c.target, port,
                            c.kind == ClaimKind::kExternalIP ? "ExternalIP" : "LoadBalancer");
      }
    }
    // 4. A node port on a node's address.
    const Claim* node = nullptr;
    for (const Claim& c : claims) {
      if (c.kind == ClaimKind::kNode) {
        node = &c;
        break;
      }
    }
    if (node != nullptr) {
      auto it =
          std::lower_bound(node_ports_.begin(), node_ports_.end(), port,
                           [](const NodePortRecord& r, uint16_t p) { return r.node_port < p; });
      if (it != node_ports_.end() && it->node_port == port) {
        Peer service = service_peer(it->service, 0, "NodePort");
        service.port_name = str(service_ports_[it->port].name);
        return service;
      }
    }
    // 5. A host-network pod, when the port names exactly one.
    const Claim* host_pod = nullptr;
    bool ambiguous = false;
    for (const Claim& c : claims) {
      if (c.kind != ClaimKind::kHostPort || c.port != port) continue;
      if (host_pod == nullptr) {
        host_pod = &c;
      } else if (host_pod->target != c.target) {
        ambiguous = true;
      }
    }
    if (host_pod != nullptr && !ambiguous) return pod_peer(host_pod->target);
    // 6. A pod IP: the claim alive when the connection opened (see "IP reuse").
    const Claim* best = nullptr;
    for (const Claim& c : claims) {
      if (c.kind != ClaimKind::kPod || c.since_ns > opened_ns || opened_ns >= c.gone_ns) continue;
      if (best == nullptr ||
          std::tie(best->terminating, c.since_ns) > std::tie(c.terminating, best->since_ns)) {
        best = &c;
      }
    }
    if (best == nullptr) {
      for (const Claim& c : claims) {
        if (c.kind != ClaimKind::kPod || c.gone_ns != kPresent) continue;
        if (best == nullptr ||
            std::tie(best->terminating, c.since_ns) > std::tie(c.terminating, best->since_ns)) {
          best = &c;
        }
      }
    }
    if (best != nullptr) return pod_peer(best->target);
    // 7. A node.
    if (node != nullptr) {
      peer.kind = PeerKind::kNode;
      peer.name = str(nodes_[node->target].name);
      peer.uid = str(nodes_[node->target].uid);
      return peer;
    }
    // 8. An external or load-balancer IP, no port matched.
    for (const Claim& c : claims) {
      if (c.kind == ClaimKind::kExternalIP || c.kind == ClaimKind::kIngressIP) {
        return service_peer(c.target, port,
                            c.kind == ClaimKind::kExternalIP ? "ExternalIP" : "LoadBalancer");
      }
    }
  }
  // 9. Outside the cluster.
  peer.kind = PeerKind::kExternal;
  const std::string_view network = external_networks_.classify(address);
  peer.network = network.empty() ? kInternet : network;
  return peer;
}

}  // namespace netmon
