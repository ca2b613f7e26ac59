// netmon-storm: a loopback TCP connection storm, to measure what an observer (netmon, tcplife)
// costs the connecting programs. One process: an epoll server thread accepting on --listeners
// consecutive ports from --port-base (0: ephemeral ports), and --workers client threads that each
// loop connect -> optional 1-byte exchange -> close. Clients stop after --connections N or
// --seconds S, whichever comes first; then the storm waits (at most --drain-seconds) until the
// server has accepted and closed every connection the clients completed, so a connection counts
// only once both of its ends are done, and "seconds" runs until then. Prints one JSON summary
// line on stdout:
//   {"connections":N,"failed":N,"accepted":N,"served":N,"seconds":S,"conn_per_s":R,
//    "ports":[min,max],"listen_ports":[...],"family":"ipv4",...}
// "accepted" counts accept4() successes, "served" the server's closes; both equal "connections"
// unless the drain timed out (the storm then exits 1).
// "ports" is the range of the listener ports: every connection has one of them as its server
// port, so an observer's events of this storm are those with sport or dport in that range.
//
// Closing: the client closes first (FIN), the server closes on end-of-file. TIME_WAIT therefore
// stays on the client side, where Linux reuses loopback TIME_WAIT ports (net.ipv4.tcp_tw_reuse=2,
// the default, applies to loopback) once they are a second old; to need that as little as
// possible, connections spread over several listener ports and, for IPv4, over source addresses
// 127.0.0.1..127.0.0.S (--sources), with IP_BIND_ADDRESS_NO_PORT so the port is picked per
// 4-tuple. Nothing uses SO_LINGER 0: every connection closes with FIN, as real ones mostly do.
//
// --connect ADDR:PORT (IPv4): every client dials ADDR:PORT instead of a listener, for a runner that
// translates that address to the listeners (a kube-proxy-like DNAT: storm_runner.py --dnat);
// "ports" stays the listeners' range, the server's ends.
//
// Credentials: with --caps container (the runner's default) the storm first reduces its
// capabilities to the set container runtimes (containerd, Docker) give a container by default,
// executes itself again (so its exec carries those credentials), then forks and runs in the
// child: the connecting process and its parent both look like a pod's processes.
// --caps inherit keeps whatever it was started with.
//
// --rate R paces the clients: connection n starts no earlier than n / R seconds after the start
// (all workers together), for an observer's cost at a given load rather than at the most the
// machine can do.
//
// Every loop is bounded by --connections and --seconds; all traffic is on loopback.

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
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
#include <vector>

namespace {

struct Options {
  int workers = 8;
  uint64_t connections = 100000;
  double seconds = 10.0;
  double drain_seconds = 30.0;
  double rate = 0;  // --rate: connections a second for all workers together; 0: as fast as possible
  bool ipv6 = false;
  bool exchange = false;
  int listeners = 8;
  int port_base = 0;
  int sources = 32;
  uint32_t connect_addr = 0;  // --connect, host order; 0: the listeners
  uint16_t connect_port = 0;
  enum class Caps { kInherit, kContainer, kFork } caps = Caps::kInherit;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "netmon-storm: %s\n"
               "usage: netmon-storm [--workers N] [--connections N] [--seconds S] [--ipv6]\n"
               "                    [--exchange] [--listeners N] [--port-base P] [--sources N]\n"
               "                    [--drain-seconds S] [--caps container|inherit]\n"
               "                    [--rate CONNECTIONS_PER_SECOND]\n"
               "                    [--connect ADDR:PORT]\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--workers")
      o.workers = std::atoi(value());
    else if (a == "--connections")
      o.connections = std::strtoull(value(), nullptr, 10);
    else if (a == "--seconds")
      o.seconds = std::atof(value());
    else if (a == "--ipv6")
      o.ipv6 = true;
    else if (a == "--exchange")
      o.exchange = true;
    else if (a == "--listeners")
      o.listeners = std::atoi(value());
    else if (a == "--port-base")
      o.port_base = std::atoi(value());
    else if (a == "--sources")
      o.sources = std::atoi(value());
    else if (a == "--caps") {
      const std::string v = value();
      if (v == "container")
        o.caps = Options::Caps::kContainer;
      else if (v == "fork")  // internal: the second stage of "container"
        o.caps = Options::Caps::kFork;
      else if (v != "inherit")
        usage("--caps must be container or inherit");
    } else if (a == "--drain-seconds") {
      o.drain_seconds = std::atof(value());
    } else if (a == "--rate") {
      o.rate = std::atof(value());
    } else if (a == "--connect") {
      const std::string v = value();
      const size_t colon = v.rfind(':');
      in_addr addr{};
      const long port = colon == std::string::npos ? 0 : std::atol(v.c_str() + colon + 1);
      if (colon == std::string::npos ||
          inet_pton(AF_INET, v.substr(0, colon).c_str(), &addr) != 1 || port < 1 || port > 65535)
        usage("--connect must be IPV4:PORT");
      o.connect_addr = ntohl(addr.s_addr);
      o.connect_port = static_cast<uint16_t>(port);
    } else
      usage(("unknown argument " + a).c_str());
  }
  if (o.workers < 1 || o.workers > 256) usage("--workers must be 1..256");
  if (o.listeners < 1 || o.listeners > 64) usage("--listeners must be 1..64");
  if (o.sources < 1 || o.sources > 250) usage("--sources must be 1..250");
  if (o.seconds <= 0 || o.seconds > 3600) usage("--seconds must be in (0, 3600]");
  if (o.drain_seconds <= 0 || o.drain_seconds > 600) usage("--drain-seconds must be in (0, 600]");
  if (o.connections < 1) usage("--connections must be >= 1");
  if (o.rate < 0 || o.rate > 10e6) usage("--rate must be in [0, 10000000]");
  if (o.port_base < 0 || o.port_base + o.listeners > 65535) usage("bad --port-base");
  if (o.connect_addr && o.ipv6) usage("--connect is IPv4 only");
  return o;
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "netmon-storm: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

struct Addr {
  sockaddr_storage ss{};
  socklen_t len = 0;
};

Addr loopback(bool ipv6, uint16_t port, int source_index = 0) {
  Addr a;
  if (ipv6) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_addr = in6addr_loopback;
    s6->sin6_port = htons(port);
    a.len = sizeof(sockaddr_in6);
  } else {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&a.ss);
    s4->sin_family = AF_INET;
    s4->sin_addr.s_addr = htonl(0x7f000001u + static_cast<uint32_t>(source_index));
    s4->sin_port = htons(port);
    a.len = sizeof(sockaddr_in);
  }
  return a;
}

uint16_t port_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) die("getsockname");
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

// The capabilities containerd and Docker give a container by default.
constexpr int kContainerCaps[] = {
    CAP_CHOWN,      CAP_DAC_OVERRIDE, CAP_FOWNER,      CAP_FSETID,           CAP_KILL,
    CAP_SETGID,     CAP_SETUID,       CAP_SETPCAP,     CAP_NET_BIND_SERVICE, CAP_NET_RAW,
    CAP_SYS_CHROOT, CAP_MKNOD,        CAP_AUDIT_WRITE, CAP_SETFCAP};

// Reduces the bounding set to kContainerCaps, as container runtimes do, and executes this
// program again with `--caps fork` appended: the exec of a root process then gets exactly those
// capabilities (those of them the caller had).
[[noreturn]] void exec_with_container_caps(int argc, char** argv) {
  uint64_t keep = 0;
  for (int cap : kContainerCaps) keep |= uint64_t{1} << cap;
  for (int cap = 0; cap < 64 && prctl(PR_CAPBSET_READ, cap) >= 0; ++cap) {
    if (!(keep & (uint64_t{1} << cap)) && prctl(PR_CAPBSET_DROP, cap) != 0)
      die("prctl(PR_CAPBSET_DROP)");
  }
  std::vector<char*> args(argv, argv + argc);
  args.push_back(const_cast<char*>("--caps"));
  args.push_back(const_cast<char*>("fork"));
  args.push_back(nullptr);
  execv("/proc/self/exe", args.data());
  die("execv");
}

// Forks: the parent waits and passes on the child's exit status, the child returns and runs the
// storm.
void fork_and_wait() {
  const pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) return;
  int status = 0;
  while (waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) die("waitpid");
  }
  std::exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

std::atomic<uint64_t> g_claimed{0};   // connections handed to workers
std::atomic<uint64_t> g_done{0};      // connections completed by the client side
std::atomic<uint64_t> g_failed{0};    // connect/exchange failures
std::atomic<uint64_t> g_accepted{0};  // connections the server accepted
std::atomic<uint64_t> g_served{0};    // connections the server closed
std::atomic<bool> g_stop{false};      // the time limit passed
std::atomic<bool> g_server_stop{false};

// The server: accepts on every listener and closes each connection at its end-of-file,
// answering the 1-byte exchange when there is one.
void serve(const std::vector<int>& listeners, bool exchange) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  for (int fd : listeners) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = (uint64_t{1} << 32) | static_cast<uint32_t>(fd);
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl listener");
  }
  epoll_event events[256];
  while (!g_server_stop.load(std::memory_order_relaxed)) {
    int n = epoll_wait(ep, events, 256, 50);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      int fd = static_cast<int>(events[i].data.u64 & 0xffffffffu);
      if (events[i].data.u64 >> 32) {
        for (int k = 0; k < 1024; ++k) {  // bounded drain of the accept queue
          int c = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;
          g_accepted.fetch_add(1, std::memory_order_relaxed);
          epoll_event ev{};
          ev.events = EPOLLIN | EPOLLRDHUP;
          ev.data.u64 = static_cast<uint32_t>(c);
          if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) != 0) die("epoll_ctl connection");
        }
        continue;
      }
      char buf[64];
      ssize_t r = read(fd, buf, sizeof buf);
      if (r > 0) {
        if (exchange) (void)!write(fd, buf, 1);
        // The client's FIN may already be here too: read again for end-of-file.
        r = read(fd, buf, sizeof buf);
      }
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        close(fd);  // also removes it from the epoll set
        g_served.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
  close(ep);
}

void work(const Options& o, const std::vector<uint16_t>& ports,
          std::chrono::steady_clock::time_point start) {
  while (!g_stop.load(std::memory_order_relaxed)) {
    uint64_t n = g_claimed.fetch_add(1, std::memory_order_relaxed);
    if (n >= o.connections) break;
    if (o.rate > 0) {  // connection n is due n / rate seconds after the start (none when late)
      std::this_thread::sleep_until(
          start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                      std::chrono::duration<double>(static_cast<double>(n) / o.rate)));
      if (g_stop.load(std::memory_order_relaxed)) break;
    }
    Addr dst = loopback(o.ipv6, ports[(n / static_cast<uint64_t>(o.sources)) % ports.size()]);
    if (o.connect_addr) {
      auto* s4 = reinterpret_cast<sockaddr_in*>(&dst.ss);
      s4->sin_addr.s_addr = htonl(o.connect_addr);
      s4->sin_port = htons(o.connect_port);
    }
    int fd = socket(o.ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    if (!o.ipv6 && o.sources > 1) {
      // Rotate the source address per connection: TIME_WAIT spreads over every 4-tuple space.
      const Addr src = loopback(false, 0, static_cast<int>(n % static_cast<uint64_t>(o.sources)));
      setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
      if (bind(fd, reinterpret_cast<const sockaddr*>(&src.ss), src.len) != 0) die("bind source");
    }
    bool ok = connect(fd, reinterpret_cast<const sockaddr*>(&dst.ss), dst.len) == 0;
    if (ok && o.exchange) {
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      char c = 'x';
      ok = write(fd, &c, 1) == 1 && read(fd, &c, 1) == 1;
    }
    close(fd);
    if (ok) {
      g_done.fetch_add(1, std::memory_order_relaxed);
    } else {
      if (g_failed.fetch_add(1, std::memory_order_relaxed) < 5)
        std::fprintf(stderr, "netmon-storm: connection failed: %s\n", std::strerror(errno));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  if (o.caps == Options::Caps::kContainer) exec_with_container_caps(argc, argv);
  if (o.caps == Options::Caps::kFork) fork_and_wait();

  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  std::vector<int> listeners;
  std::vector<uint16_t> ports;
  for (int i = 0; i < o.listeners; ++i) {
    int fd = socket(o.ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    const uint16_t want = o.port_base == 0 ? 0 : static_cast<uint16_t>(o.port_base + i);
    const Addr a = loopback(o.ipv6, want);
    if (bind(fd, reinterpret_cast<const sockaddr*>(&a.ss), a.len) != 0) die("bind listener");
    if (listen(fd, 4096) != 0) die("listen");
    listeners.push_back(fd);
    ports.push_back(port_of(fd));
  }

  std::thread server(serve, std::cref(listeners), o.exchange);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int i = 0; i < o.workers; ++i)
    workers.emplace_back(work, std::cref(o), std::cref(ports), start);

  const auto limit = start + std::chrono::duration<double>(o.seconds);
  while (g_done.load() + g_failed.load() < o.connections &&
         std::chrono::steady_clock::now() < limit)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  g_stop = true;
  for (auto& t : workers) t.join();

  // The server may lag behind the clients (their connects complete from the accept backlog):
  // the storm ends when it has accepted and closed every completed connection, or the drain
  // time runs out.
  const uint64_t completed = g_done.load();
  const auto drain_limit =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(o.drain_seconds);
  while (g_served.load() < completed && std::chrono::steady_clock::now() < drain_limit)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  g_server_stop = true;
  server.join();
  for (int fd : listeners) close(fd);

  const uint64_t done = g_done.load();
  const auto [lo, hi] = std::minmax_element(ports.begin(), ports.end());
  std::string list;
  for (size_t i = 0; i < ports.size(); ++i) {
    if (i) list += ',';
    list += std::to_string(ports[i]);  // appended: GCC 12 -O3 false -Wrestrict on "," + string
  }
  std::printf(
      "{\"connections\":%llu,\"failed\":%llu,\"accepted\":%llu,\"served\":%llu,"
      "\"seconds\":%.3f,\"conn_per_s\":%.1f,"
      "\"ports\":[%u,%u],\"listen_ports\":[%s],\"family\":\"%s\",\"workers\":%d,"
      "\"exchange\":%s}\n",
      static_cast<unsigned long long>(done), static_cast<unsigned long long>(g_failed.load()),
      static_cast<unsigned long long>(g_accepted.load()),
      static_cast<unsigned long long>(g_served.load()), seconds,
      seconds > 0 ? static_cast<double>(done) / seconds : 0.0, *lo, *hi, list.c_str(),
      o.ipv6 ? "ipv6" : "ipv4", o.workers, o.exchange ? "true" : "false");
  if (g_served.load() < done)
    std::fprintf(stderr, "netmon-storm: the server served %llu of %llu connections in time\n",
                 static_cast<unsigned long long>(g_served.load()),
                 static_cast<unsigned long long>(done));
  return g_failed.load() == 0 && g_served.load() >= done ? 0 : 1;
}
