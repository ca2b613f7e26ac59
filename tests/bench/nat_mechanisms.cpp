// netmon-bench-nat: what each way of learning a connection's NAT translation costs per connection
// on this machine (issue #20). Raw netlink (NETLINK_NETFILTER, ctnetlink), no library.
//
// The bench unshares a network namespace of its own (everything it makes goes away with the
// process), brings up lo, routes 10.96.0.0/16 to lo and installs one kube-proxy-like nftables
// DNAT rule in the nat OUTPUT chain: VIP 10.96.0.10:80 -> 127.0.0.1:<server port>. One client
// thread then makes --connections connections, one after another (connect, close; source
// address rotating over 127.0.0.1..64), of which one in (--untranslated + 1) dials the VIP
// (translated) and the others the server directly (not translated); a server thread accepts and
// closes each at end-of-file. Modes, interleaved in every round:
//   baseline  no conntrack listener in the namespace (the kernel builds no event message);
//   events    a reader thread subscribed to NFNLGRP_CONNTRACK_NEW and _DESTROY that parses every
//             message and keeps a table of translated entries (what the agent does);
//   filtered  the same with a classic BPF socket filter (SKF_AD_NLATTR finds CTA_STATUS) that
//             lets through only entries with IPS_SRC_NAT or IPS_DST_NAT;
//   batched   filtered, but the reader drains the socket every 5 ms instead of waking at each
//             message (what costs the parsing, what the wake-ups);
//   get       no subscription; the client asks ctnetlink (IPCTNL_MSG_CT_GET, the exact original
//             tuple and CTA_ZONE 0) for every connection right after connect() and waits for
//             the answer (what an agent asking per connection event would do).
// After each run the bench flushes the namespace's conntrack table through ctnetlink, which sends
// a DESTROY message for every entry (on a node they arrive at the rate of NEW ones, as entries
// expire), so every run starts from an empty table and the reader parses both kinds.
//
// Per run: wall time per connection of the client's loop, CPU per connection of the client and
// server threads (CLOCK_THREAD_CPUTIME_ID: on loopback the kernel's TCP, conntrack, NAT and event
// delivery run in the sending thread's context), the reader's CPU per message and per translated
// connection, the GET latency (p50, p99) and its CPU. Printed as a Markdown table of medians over
// the rounds with ratios against the same round's baseline.
//
// Checks (exit 1): every translated connection's NEW message (and its DESTROY) received, none of an
// untranslated one when filtered (all of them when not), every GET answered with the right entry
// (the reply direction from 127.0.0.1:<server port> and IPS_DST_NAT exactly when translated), no
// connection failed, no message lost (ENOBUFS). Exit 77 when it cannot run here (not root, no nft,
// no conntrack), except under CI=true: then 1. Every loop is bounded in count and time.

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

constexpr int kSkip = 77;
constexpr uint32_t kVip = 0x0a60000a;  // 10.96.0.10
constexpr uint16_t kVipPort = 80;
constexpr int kSources = 64;  // client source addresses 127.0.0.1..64
constexpr uint32_t kNatBits = IPS_SRC_NAT | IPS_DST_NAT;

struct Options {
  uint64_t connections = 20000;
  int rounds = 3;
  int untranslated = 1;   // direct connections per translated one
  double seconds = 60.0;  // bound of one run's connection loop
  bool quick = false;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "netmon-bench-nat: %s\n"
               "usage: netmon-bench-nat [--connections N] [--rounds R] [--untranslated K]\n"
               "                        [--seconds S] [--quick]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--connections")
      o.connections = std::strtoull(value(), nullptr, 10);
    else if (a == "--rounds")
      o.rounds = std::atoi(value());
    else if (a == "--untranslated")
      o.untranslated = std::atoi(value());
    else if (a == "--seconds")
      o.seconds = std::atof(value());
    else if (a == "--quick")
      o.quick = true;
    else
      usage(("unknown argument " + a).c_str());
  }
  if (o.quick) {
    o.connections = 600;
    o.rounds = 1;
    o.seconds = 10;
  }
  if (o.connections < 1 || o.connections > 1000000) usage("--connections must be 1..1000000");
  if (o.rounds < 1 || o.rounds > 20) usage("--rounds must be 1..20");
  if (o.untranslated < 0 || o.untranslated > 100) usage("--untranslated must be 0..100");
  if (o.seconds <= 0 || o.seconds > 600) usage("--seconds must be in (0, 600]");
  return o;
}

[[noreturn]] void cannot_run(const std::string& why) {
  const char* ci = std::getenv("CI");
  const bool in_ci = ci && std::string(ci) == "true";
  std::fprintf(stderr, "netmon-bench-nat: %s: %s\n",
               in_ci ? "CI=true, and this cannot run" : "SKIP", why.c_str());
  std::exit(in_ci ? 1 : kSkip);
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "netmon-bench-nat: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

uint64_t read_number(const char* path) {
  FILE* f = std::fopen(path, "r");
  if (!f) return UINT64_MAX;
  unsigned long long v = UINT64_MAX;
  if (std::fscanf(f, "%llu", &v) != 1) v = UINT64_MAX;
  std::fclose(f);
  return v;
}

// --- The namespace -------------------------------------------------------------------------

// Enters a new network namespace (this thread, and every thread and child started after) with
// lo up and 10.96.0.0/16 routed to lo.
void enter_namespace() {
  if (unshare(CLONE_NEWNET) != 0)
    cannot_run(std::string("unshare(CLONE_NEWNET): ") + strerror(errno));
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) die("SIOCGIFFLAGS lo");
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) die("SIOCSIFFLAGS lo");
  close(fd);
  // Child processes inherit the namespace: ip and nft act on it, not on the host's.
  if (std::system("ip route add 10.96.0.0/16 dev lo") != 0) cannot_run("ip route add failed");
}

// The DNAT rule.
void install_rules(uint16_t server_port) {
  const std::string rules =
      "table ip netmon_bench_nat {\n"
      "  chain output {\n"
      "    type nat hook output priority -100; policy accept;\n"
      "    ip daddr 10.96.0.10 tcp dport 80 dnat to 127.0.0.1:" +
      std::to_string(server_port) +
      "\n"
      "  }\n"
      "}\n";
  FILE* nft = popen("nft -f -", "w");
  if (!nft) cannot_run("cannot run nft");
  std::fputs(rules.c_str(), nft);
  if (pclose(nft) != 0) cannot_run("nft refused the DNAT rule (nftables NAT unavailable?)");
  if (read_number("/proc/sys/net/netfilter/nf_conntrack_count") == UINT64_MAX)
    cannot_run("no conntrack in the namespace (/proc/sys/net/netfilter/nf_conntrack_count)");
  // No entry from a stray packet of a flushed connection (the last ACKs of a run, after its
  // flush) in the next run: no mid-stream pick-up in this namespace.
  FILE* loose = std::fopen("/proc/sys/net/netfilter/nf_conntrack_tcp_loose", "w");
  if (!loose || std::fputs("0", loose) < 0 || std::fclose(loose) != 0)
    cannot_run("cannot set nf_conntrack_tcp_loose in the namespace");
}

// Waits (at most `seconds`) until the namespace's conntrack table is empty.
bool wait_conntrack_empty(double seconds) {
  const double deadline = now_seconds() + seconds;
  while (now_seconds() < deadline) {
    if (read_number("/proc/sys/net/netfilter/nf_conntrack_count") == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// --- ctnetlink ------------------------------------------------------------------------------

struct Tuple {
  uint32_t src = 0, dst = 0;      // network order
  uint16_t sport = 0, dport = 0;  // network order
  bool operator==(const Tuple& o) const {
    return src == o.src && dst == o.dst && sport == o.sport && dport == o.dport;
  }
};
struct TupleHash {
  size_t operator()(const Tuple& t) const noexcept {
    uint64_t h = (uint64_t{t.src} << 32 | t.dst) * 0x9e3779b97f4a7c15ull;
    return static_cast<size_t>(h ^ ((uint64_t{t.sport} << 16 | t.dport) * 0xc2b2ae3d27d4eb4full));
  }
};

struct Entry {
  int msg = -1;  // IPCTNL_MSG_CT_NEW or _DELETE; -1: not a TCP IPv4 entry
  Tuple orig, reply;
  uint32_t status = 0;
  uint16_t zone = 0;
};

// Calls f(type, payload, length) for every attribute in [p, p + len); false when malformed.
template <typename F>
bool for_each_attr(const uint8_t* p, size_t len, F&& f) {
  for (int guard = 0; len >= sizeof(nlattr) && guard < 64; ++guard) {
    nlattr a;
    std::memcpy(&a, p, sizeof a);
    if (a.nla_len < sizeof(nlattr) || a.nla_len > len) return false;
    f(a.nla_type & NLA_TYPE_MASK, p + NLA_HDRLEN, static_cast<size_t>(a.nla_len - NLA_HDRLEN));
    const size_t step = NLA_ALIGN(a.nla_len);
    if (step >= len) return true;
    p += step;
    len -= step;
  }
  return true;
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

bool parse_tuple(const uint8_t* p, size_t len, Tuple& t) {
  int have = 0;
  bool tcp = false;
  const bool ok = for_each_attr(p, len, [&](int type, const uint8_t* v, size_t n) {
    if (type == CTA_TUPLE_IP) {
      for_each_attr(v, n, [&](int ip, const uint8_t* w, size_t m) {
        if (ip == CTA_IP_V4_SRC && m >= 4) t.src = load<uint32_t>(w), have |= 1;
        if (ip == CTA_IP_V4_DST && m >= 4) t.dst = load<uint32_t>(w), have |= 2;
      });
    } else if (type == CTA_TUPLE_PROTO) {
      for_each_attr(v, n, [&](int pr, const uint8_t* w, size_t m) {
        if (pr == CTA_PROTO_NUM && m >= 1) tcp = *w == IPPROTO_TCP;
        if (pr == CTA_PROTO_SRC_PORT && m >= 2) t.sport = load<uint16_t>(w), have |= 4;
        if (pr == CTA_PROTO_DST_PORT && m >= 2) t.dport = load<uint16_t>(w), have |= 8;
      });
    }
  });
  return ok && tcp && have == 15;
}

// Parses one ctnetlink message (header included).
Entry parse_entry(const uint8_t* msg, size_t len) {
  Entry e;
  nlmsghdr h;
  std::memcpy(&h, msg, sizeof h);
  if (NFNL_SUBSYS_ID(h.nlmsg_type) != NFNL_SUBSYS_CTNETLINK) return e;
  const int type = NFNL_MSG_TYPE(h.nlmsg_type);
  if (type != IPCTNL_MSG_CT_NEW && type != IPCTNL_MSG_CT_DELETE) return e;
  const size_t head = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
  if (len < head) return e;
  int have = 0;
  for_each_attr(msg + head, len - head, [&](int a, const uint8_t* v, size_t n) {
    if (a == CTA_TUPLE_ORIG && parse_tuple(v, n, e.orig)) have |= 1;
    if (a == CTA_TUPLE_REPLY && parse_tuple(v, n, e.reply)) have |= 2;
    if (a == CTA_STATUS && n >= 4) e.status = ntohl(load<uint32_t>(v));
    if (a == CTA_ZONE && n >= 2) e.zone = ntohs(load<uint16_t>(v));
  });
  if (have == 3) e.msg = type;
  return e;
}

// A netlink message under construction (attributes appended, nests closed by offset).
struct Message {
  std::vector<uint8_t> bytes;
  void put(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    bytes.insert(bytes.end(), b, b + n);
    bytes.resize(NLMSG_ALIGN(bytes.size()), 0);
  }
  size_t begin_nest(uint16_t type) {
    const size_t at = bytes.size();
    nlattr a{NLA_HDRLEN, static_cast<uint16_t>(type | NLA_F_NESTED)};
    put(&a, sizeof a);
    return at;
  }
  void end_nest(size_t at) {
    const auto len = static_cast<uint16_t>(bytes.size() - at);
    std::memcpy(bytes.data() + at, &len, sizeof len);
  }
  template <typename T>
  void attr(uint16_t type, T value) {
    nlattr a{static_cast<uint16_t>(NLA_HDRLEN + sizeof(T)), type};
    const size_t at = bytes.size();
    bytes.resize(at + NLA_ALIGN(NLA_HDRLEN + sizeof(T)), 0);
    std::memcpy(bytes.data() + at, &a, sizeof a);
    std::memcpy(bytes.data() + at + NLA_HDRLEN, &value, sizeof value);
  }
};

// IPCTNL_MSG_CT_GET of the entry whose original direction is `t` (TCP), in zone 0.
std::vector<uint8_t> get_request(const Tuple& t, uint32_t seq) {
  Message m;
  nlmsghdr h{};
  h.nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
  h.nlmsg_flags = NLM_F_REQUEST;
  h.nlmsg_seq = seq;
  m.put(&h, sizeof h);
  nfgenmsg g{};
  g.nfgen_family = AF_INET;
  g.version = NFNETLINK_V0;
  m.put(&g, sizeof g);
  const size_t orig = m.begin_nest(CTA_TUPLE_ORIG);
  const size_t ip = m.begin_nest(CTA_TUPLE_IP);
  m.attr<uint32_t>(CTA_IP_V4_SRC, t.src);
  m.attr<uint32_t>(CTA_IP_V4_DST, t.dst);
  m.end_nest(ip);
  const size_t proto = m.begin_nest(CTA_TUPLE_PROTO);
  m.attr<uint8_t>(CTA_PROTO_NUM, IPPROTO_TCP);
  m.attr<uint16_t>(CTA_PROTO_SRC_PORT, t.sport);
  m.attr<uint16_t>(CTA_PROTO_DST_PORT, t.dport);
  m.end_nest(proto);
  m.end_nest(orig);
  m.attr<uint16_t>(CTA_ZONE, htons(0));
  const auto len = static_cast<uint32_t>(m.bytes.size());
  std::memcpy(m.bytes.data(), &len, sizeof len);
  return m.bytes;
}

int netfilter_socket() {
  const int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) cannot_run(std::string("NETLINK_NETFILTER socket: ") + strerror(errno));
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) die("bind netlink");
  return fd;
}

// Deletes every IPv4 entry of the namespace (IPCTNL_MSG_CT_DELETE without a tuple), each with a
// DESTROY message to the subscribers; waits (bounded) for the kernel's acknowledgement.
bool flush_conntrack() {
  const int fd = netfilter_socket();
  Message m;
  nlmsghdr h{};
  h.nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
  h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  h.nlmsg_seq = 1;
  m.put(&h, sizeof h);
  nfgenmsg g{};
  g.nfgen_family = AF_INET;
  g.version = NFNETLINK_V0;
  m.put(&g, sizeof g);
  const auto len = static_cast<uint32_t>(m.bytes.size());
  std::memcpy(m.bytes.data(), &len, sizeof len);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  bool ok = false;
  if (sendto(fd, m.bytes.data(), m.bytes.size(), 0, reinterpret_cast<sockaddr*>(&kernel),
             sizeof kernel) == static_cast<ssize_t>(m.bytes.size())) {
    uint8_t buf[4096];
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10000) > 0 &&
        recv(fd, buf, sizeof buf, 0) >= static_cast<ssize_t>(sizeof(nlmsghdr) + sizeof(int))) {
      int error = -1;
      std::memcpy(&error, buf + NLMSG_HDRLEN, sizeof error);
      ok = error == 0;
    }
  }
  close(fd);
  return ok;
}

// The socket filter: accept a message whose top-level CTA_STATUS has IPS_SRC_NAT or IPS_DST_NAT.
// SKF_AD_NLATTR: A = offset of the attribute of type X found from offset A (0: none); event
// messages are one per skb, linear (the kernel's helper returns 0 for a non-linear skb).
constexpr sock_filter kTranslatedOnly[] = {
    BPF_STMT(BPF_LD | BPF_IMM, NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg))),
    BPF_STMT(BPF_LDX | BPF_IMM, CTA_STATUS),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<uint32_t>(SKF_AD_OFF + SKF_AD_NLATTR)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 4, 0),  // no CTA_STATUS: drop
    BPF_STMT(BPF_MISC | BPF_TAX, 0),
    BPF_STMT(BPF_LD | BPF_W | BPF_IND, NLA_HDRLEN),  // the status, big-endian as loaded
    BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, kNatBits, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, 0),
    BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
};

// --- One run --------------------------------------------------------------------------------

enum class Mode { kBaseline, kEvents, kFiltered, kBatched, kGet };
constexpr Mode kModes[] = {Mode::kBaseline, Mode::kEvents, Mode::kFiltered, Mode::kBatched,
                           Mode::kGet};
constexpr int kBatchMs = 5;  // kBatched: the reader drains the socket every 5 ms
const char* name(Mode m) {
  switch (m) {
    case Mode::kBaseline:
      return "baseline";
    case Mode::kEvents:
      return "events";
    case Mode::kFiltered:
      return "filtered";
    case Mode::kBatched:
      return "batched";
    case Mode::kGet:
      return "get";
  }
  return "?";
}

struct Run {
  Mode mode = Mode::kBaseline;
  uint64_t connections = 0, translated = 0, failed = 0, served = 0;
  double wall = 0, client_cpu = 0, server_cpu = 0;
  // events, filtered
  double reader_cpu = 0;
  double reader_cpu_news = 0;  // until the first DESTROY (the flush's burst follows)
  uint64_t messages = 0, news = 0, destroys = 0, news_translated = 0, news_vip = 0, enobufs = 0;
  size_t table_peak = 0;
  // get
  double get_cpu = 0;
  std::vector<double> get_latency;  // seconds
  uint64_t get_wrong = 0;
};

struct Reader {
  int fd = -1;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> destroys{0};  // for the main thread's wait
  bool batched = false;               // drain every kBatchMs instead of waking at each message
  Run* run = nullptr;

  void loop() {
    std::unordered_map<Tuple, Tuple, TupleHash> table;  // translated: both directions
    table.reserve(1 << 16);
    const double cpu0 = thread_cpu_seconds();
    static thread_local uint8_t buf[1 << 16];
    // Bounded: the main thread sets `stop` within the run's time bound plus the drain's.
    for (uint64_t polls = 0; polls < 100000000; ++polls) {
      int n = 0;
      if (batched) {
        std::this_thread::sleep_for(std::chrono::milliseconds(kBatchMs));
        pollfd p{fd, POLLIN, 0};
        n = poll(&p, 1, 0);
      } else {
        pollfd p{fd, POLLIN, 0};
        n = poll(&p, 1, 20);
      }
      if (n == 0 && stop.load()) break;
      for (int k = 0; k < 4096; ++k) {  // bounded drain of what is queued
        const ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r < 0) {
          if (errno == ENOBUFS) {
            ++run->enobufs;
            continue;
          }
          break;
        }
        size_t left = static_cast<size_t>(r);
        const uint8_t* m = buf;
        while (left >= sizeof(nlmsghdr)) {
          nlmsghdr h;
          std::memcpy(&h, m, sizeof h);
          if (h.nlmsg_len < sizeof h || h.nlmsg_len > left) break;
          ++run->messages;
          const Entry e = parse_entry(m, h.nlmsg_len);
          if (e.msg == IPCTNL_MSG_CT_NEW) {
            ++run->news;
            if (e.status & kNatBits) {
              ++run->news_translated;
              if (e.orig.dst == htonl(kVip)) ++run->news_vip;
              table[e.orig] = e.reply;
              table[e.reply] = e.orig;
              run->table_peak = std::max(run->table_peak, table.size());
            }
          } else if (e.msg == IPCTNL_MSG_CT_DELETE) {
            if (run->destroys++ == 0) run->reader_cpu_news = thread_cpu_seconds() - cpu0;
            destroys.fetch_add(1, std::memory_order_relaxed);
            table.erase(e.orig);
            table.erase(e.reply);
          }
          const size_t step = NLMSG_ALIGN(h.nlmsg_len);
          if (step >= left) break;
          m += step;
          left -= step;
        }
      }
    }
    run->reader_cpu = thread_cpu_seconds() - cpu0;
    if (run->destroys == 0) run->reader_cpu_news = run->reader_cpu;
  }
};

std::atomic<bool> g_server_stop{false};
std::atomic<uint64_t> g_served{0};
double g_server_cpu = 0;

void serve(int listener) {
  const double cpu0 = thread_cpu_seconds();
  char buf[64];
  for (uint64_t k = 0; k < 100000000 && !g_server_stop.load(); ++k) {
    pollfd p{listener, POLLIN, 0};
    if (poll(&p, 1, 20) <= 0) continue;
    const int c = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    timeval tv{1, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (read(c, buf, sizeof buf) > 0) {
    }
    close(c);
    g_served.fetch_add(1);
  }
  g_server_cpu = thread_cpu_seconds() - cpu0;
}

sockaddr_in v4(uint32_t host_order_addr, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(host_order_addr);
  a.sin_port = htons(port);
  return a;
}

// One GET for `t`: true when the answer is the right entry (`translated`: its reply comes from
// 127.0.0.1:server_port and IPS_DST_NAT is set; else not set).
bool query(int fd, const Tuple& t, bool translated, uint16_t server_port, uint32_t seq, Run& run) {
  const double cpu0 = thread_cpu_seconds();
  const double t0 = now_seconds();
  const std::vector<uint8_t> req = get_request(t, seq);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  bool ok = false;
  if (sendto(fd, req.data(), req.size(), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) ==
      static_cast<ssize_t>(req.size())) {
    static thread_local uint8_t buf[8192];
    for (int k = 0; k < 4; ++k) {  // the answer; skip anything of another sequence number
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 1000) <= 0) break;
      const ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r < static_cast<ssize_t>(sizeof(nlmsghdr))) break;
      nlmsghdr h;
      std::memcpy(&h, buf, sizeof h);
      if (h.nlmsg_seq != seq) continue;
      if (h.nlmsg_type == NLMSG_ERROR || h.nlmsg_len > static_cast<size_t>(r)) break;
      const Entry e = parse_entry(buf, h.nlmsg_len);
      const bool nat = (e.status & IPS_DST_NAT) != 0;
      ok = e.msg == IPCTNL_MSG_CT_NEW && e.orig == t && nat == translated &&
           e.reply.src == htonl(0x7f000001) && e.reply.sport == htons(server_port) && e.zone == 0;
      break;
    }
  }
  run.get_latency.push_back(now_seconds() - t0);
  run.get_cpu += thread_cpu_seconds() - cpu0;
  return ok;
}

Run run_once(Mode mode, const Options& o, int listener, uint16_t server_port) {
  Run run;
  run.mode = mode;
  if (!wait_conntrack_empty(10)) std::fprintf(stderr, "netmon-bench-nat: conntrack not empty\n");
  g_served = 0;
  g_server_stop = false;
  std::thread server(serve, listener);

  Reader reader;
  std::thread reader_thread;
  const bool subscribed =
      mode == Mode::kEvents || mode == Mode::kFiltered || mode == Mode::kBatched;
  if (subscribed) {
    reader.fd = netfilter_socket();
    reader.run = &run;
    reader.batched = mode == Mode::kBatched;
    const int rcvbuf = 16 << 20;
    setsockopt(reader.fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
    if (mode == Mode::kFiltered || mode == Mode::kBatched) {
      sock_fprog prog{static_cast<unsigned short>(std::size(kTranslatedOnly)),
                      const_cast<sock_filter*>(kTranslatedOnly)};
      if (setsockopt(reader.fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0)
        die("SO_ATTACH_FILTER");
    }
    for (int group : {NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_DESTROY}) {
      if (setsockopt(reader.fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) != 0)
        die("NETLINK_ADD_MEMBERSHIP");
    }
    reader_thread = std::thread([&reader] { reader.loop(); });
  }
  const int query_fd = mode == Mode::kGet ? netfilter_socket() : -1;
  if (mode == Mode::kGet) run.get_latency.reserve(o.connections);

  const double cpu0 = thread_cpu_seconds();
  const double t0 = now_seconds();
  const double limit = t0 + o.seconds;
  const int one = 1;
  for (uint64_t i = 0; i < o.connections && now_seconds() < limit; ++i) {
    const bool translated = i % static_cast<uint64_t>(o.untranslated + 1) == 0;
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    const sockaddr_in src = v4(0x7f000001u + static_cast<uint32_t>(i % kSources), 0);
    const sockaddr_in dst = translated ? v4(kVip, kVipPort) : v4(0x7f000001u, server_port);
    bool ok = bind(fd, reinterpret_cast<const sockaddr*>(&src), sizeof src) == 0 &&
              connect(fd, reinterpret_cast<const sockaddr*>(&dst), sizeof dst) == 0;
    if (ok && mode == Mode::kGet) {
      sockaddr_in me{};
      socklen_t len = sizeof me;
      getsockname(fd, reinterpret_cast<sockaddr*>(&me), &len);
      const Tuple t{me.sin_addr.s_addr, dst.sin_addr.s_addr, me.sin_port, dst.sin_port};
      if (!query(query_fd, t, translated, server_port, static_cast<uint32_t>(i + 1), run))
        ++run.get_wrong;
    }
    close(fd);
    ++run.connections;
    if (translated) ++run.translated;
    if (!ok && run.failed++ < 3)
      std::fprintf(stderr, "netmon-bench-nat: connection failed: %s\n", std::strerror(errno));
  }
  run.wall = now_seconds() - t0;
  run.client_cpu = thread_cpu_seconds() - cpu0;
  if (mode == Mode::kGet) run.client_cpu -= run.get_cpu;  // reported apart

  // The server catches up (bounded); the flush sends a DESTROY for every entry.
  const double drain = now_seconds() + 10;
  while (g_served.load() < run.connections - run.failed && now_seconds() < drain)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  g_server_stop = true;
  server.join();
  run.served = g_served.load();
  run.server_cpu = g_server_cpu;
  if (!flush_conntrack()) std::fprintf(stderr, "netmon-bench-nat: the conntrack flush failed\n");
  if (reader_thread.joinable()) {
    const double destroy_limit = now_seconds() + 10;
    const uint64_t expected = mode == Mode::kEvents ? run.connections : run.translated;
    while (reader.destroys.load() < expected && now_seconds() < destroy_limit)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    reader.stop = true;
    reader_thread.join();
    close(reader.fd);
  }
  if (query_fd >= 0) close(query_fd);
  return run;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// Problems with a run's answers (empty when right).
std::string check(const Run& r, const Options& o) {
  std::string bad;
  auto add = [&](const std::string& s) { bad += (bad.empty() ? "" : "; ") + s; };
  if (r.failed) add(std::to_string(r.failed) + " connections failed");
  if (r.connections < o.connections)
    add("only " + std::to_string(r.connections) + " connections within the time bound");
  if (r.served != r.connections) add("served " + std::to_string(r.served));
  if (r.mode == Mode::kEvents || r.mode == Mode::kFiltered || r.mode == Mode::kBatched) {
    if (r.enobufs) add(std::to_string(r.enobufs) + " ENOBUFS");
    if (r.news_vip != r.translated)
      add("NEW of translated " + std::to_string(r.news_vip) + " of " +
          std::to_string(r.translated));
    const uint64_t want_news = r.mode == Mode::kEvents ? r.connections : r.translated;
    if (r.news != want_news)
      add("NEW messages " + std::to_string(r.news) + ", expected " + std::to_string(want_news));
    if (r.destroys != want_news)
      add("DESTROY messages " + std::to_string(r.destroys) + ", expected " +
          std::to_string(want_news));
  }
  if (r.mode == Mode::kGet && r.get_wrong) add(std::to_string(r.get_wrong) + " wrong GET answers");
  return bad;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  if (geteuid() != 0) cannot_run("needs root (a network namespace, nftables, ctnetlink)");

  enter_namespace();
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const sockaddr_in any = v4(0x7f000001u, 0);
  if (listener < 0 || bind(listener, reinterpret_cast<const sockaddr*>(&any), sizeof any) != 0 ||
      listen(listener, 4096) != 0)
    die("listener");
  sockaddr_in bound{};
  socklen_t len = sizeof bound;
  getsockname(listener, reinterpret_cast<sockaddr*>(&bound), &len);
  const uint16_t server_port = ntohs(bound.sin_port);
  install_rules(server_port);

  std::vector<Run> runs;
  std::string failures;
  for (int round = 1; round <= o.rounds; ++round) {
    for (Mode mode : kModes) {
      Run r = run_once(mode, o, listener, server_port);
      const std::string bad = check(r, o);
      const double n = static_cast<double>(std::max<uint64_t>(r.connections, 1));
      std::fprintf(stderr,
                   "netmon-bench-nat: round %d %-8s %llu connections (%llu translated) %.2f us "
                   "wall, client CPU %.2f us, server %.2f us",
                   round, name(mode), static_cast<unsigned long long>(r.connections),
                   static_cast<unsigned long long>(r.translated), r.wall / n * 1e6,
                   r.client_cpu / n * 1e6, r.server_cpu / n * 1e6);
      if (mode == Mode::kEvents || mode == Mode::kFiltered || mode == Mode::kBatched)
        std::fprintf(stderr, ", reader %.2f us (%llu messages: %llu NEW, %llu DESTROY)",
                     r.reader_cpu / n * 1e6, static_cast<unsigned long long>(r.messages),
                     static_cast<unsigned long long>(r.news),
                     static_cast<unsigned long long>(r.destroys));
      if (mode == Mode::kGet)
        std::fprintf(stderr, ", GET CPU %.2f us, p50 %.2f us", r.get_cpu / n * 1e6,
                     percentile(r.get_latency, 0.5) * 1e6);
      std::fprintf(stderr, "%s%s\n", bad.empty() ? "" : " -- WRONG: ", bad.c_str());
      if (!bad.empty())
        failures += "round " + std::to_string(round) + " " + name(mode) + ": " + bad + "\n";
      r.get_latency.shrink_to_fit();
      runs.push_back(std::move(r));
    }
  }
  close(listener);

  // Medians over the rounds; each ratio against the same round's baseline.
  std::printf(
      "%d round(s) x %llu connections, 1 client thread, %d untranslated per translated one "
      "(VIP 10.96.0.10:80 DNAT to 127.0.0.1:%u, nftables nat OUTPUT); "
      "medians; us = microseconds per connection unless said\n\n",
      o.rounds, static_cast<unsigned long long>(o.connections), o.untranslated, server_port);
  std::printf(
      "| mode | wall us | wall vs baseline | client CPU us | client CPU vs baseline | server CPU "
      "us | client + server CPU vs baseline | observer CPU us / connection | observer CPU us / "
      "translated connection | observer "
      "CPU / baseline client CPU | messages / connection | reader us / NEW | reader us / DESTROY "
      "(flush burst) | GET latency p50 / p99 us |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (Mode mode : kModes) {
    std::vector<double> wall, wall_ratio, cpu, cpu_ratio, server, both_ratio, obs, obs_tr,
        obs_ratio, msgs;
    std::vector<double> latency, per_new, per_destroy;
    for (size_t i = 0; i < runs.size(); ++i) {
      const Run& r = runs[i];
      if (r.mode != mode) continue;
      const Run& base = runs[i - (i % std::size(kModes))];
      const double n = static_cast<double>(std::max<uint64_t>(r.connections, 1));
      const double bn = static_cast<double>(std::max<uint64_t>(base.connections, 1));
      const double observer = r.reader_cpu + r.get_cpu;
      wall.push_back(r.wall / n * 1e6);
      wall_ratio.push_back((r.wall / n) / (base.wall / bn));
      cpu.push_back(r.client_cpu / n * 1e6);
      cpu_ratio.push_back((r.client_cpu / n) / (base.client_cpu / bn));
      server.push_back(r.server_cpu / n * 1e6);
      both_ratio.push_back(((r.client_cpu + r.server_cpu) / n) /
                           ((base.client_cpu + base.server_cpu) / bn));
      obs.push_back(observer / n * 1e6);
      obs_tr.push_back(observer / static_cast<double>(std::max<uint64_t>(r.translated, 1)) * 1e6);
      obs_ratio.push_back((observer / n) / (base.client_cpu / bn));
      msgs.push_back(static_cast<double>(r.messages) / n);
      if (r.news) per_new.push_back(r.reader_cpu_news / static_cast<double>(r.news) * 1e6);
      if (r.destroys)
        per_destroy.push_back((r.reader_cpu - r.reader_cpu_news) / static_cast<double>(r.destroys) *
                              1e6);
      latency.insert(latency.end(), r.get_latency.begin(), r.get_latency.end());
    }
    char lat[64] = "-";
    if (!latency.empty())
      std::snprintf(lat, sizeof lat, "%.1f / %.1f", percentile(latency, 0.5) * 1e6,
                    percentile(latency, 0.99) * 1e6);
    std::printf(
        "| %s | %.2f | %.3f | %.2f | %.3f | %.2f | %.3f | %.2f | %.2f | %.3f | %.2f | %.2f | %.2f "
        "| "
        "%s |\n",
        name(mode), median(wall), median(wall_ratio), median(cpu), median(cpu_ratio),
        median(server), median(both_ratio), median(obs), median(obs_tr), median(obs_ratio),
        median(msgs), median(per_new), median(per_destroy), lat);
  }
  if (!failures.empty()) {
    std::fprintf(stderr, "netmon-bench-nat: CHECK FAILED:\n%s", failures.c_str());
    return 1;
  }
  std::fprintf(stderr,
               "netmon-bench-nat: checks passed (every translated NEW received, the "
               "filter passed only translated entries, every GET answered right)\n");
  return 0;
}
