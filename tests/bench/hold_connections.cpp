// netmon-hold-connections: opens N established TCP connections on loopback, both ends held by
// the helper (2N descriptors), says so on stdout, holds them until told, then closes them. The
// bench of the start-up snapshot (issue #21, snapshot_runner.py) starts the agent meanwhile.
//
//   netmon-hold-connections --connections 100000 [--listeners 8] [--per-source 16000]
//                           [--hold-seconds 600]
//
// RLIMIT_NOFILE is raised to 2N + L + 64 (the hard limit too: CAP_SYS_RESOURCE). Without that
// capability (a container's default set lacks it) only up to the hard limit: the connections are
// then split over worker processes (forked, each holding both ends of its share, each with L
// listeners of its own on 127.0.0.1, ports the kernel picks). Connection i's client end is bound
// to 127.0.0.(2 + i / per-source), with IP_BIND_ADDRESS_NO_PORT so that its port is picked per
// 4-tuple at connect(): 100 000 connections do not exhaust the ephemeral port range.
//
// Once every connection is established and accepted it writes one JSON line to stdout:
//   {"ready":N,"pid":P,"workers":[pids],"nofile":LIMIT,"listen_addr":"127.0.0.1",
//    "ports":[...],"sources":S,"open_s":T}
// then waits until stdin has a line or ends, --hold-seconds pass (the bound), or SIGTERM/SIGINT;
// then the workers close every connection with a reset (SO_LINGER 0: no TIME_WAIT left behind)
// and it writes {"closed":N,"clean":true}. Exit 0; 1 on any failure. Every wait is bounded: a
// connect() or the accepts that do not complete within 10 s fail the worker, the workers' reports
// wait at most 60 s + 1 ms per connection, a worker that does not exit 30 s after SIGTERM is
// killed, and a worker dies with the parent (PR_SET_PDEATHSIG).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

volatile sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "netmon-hold-connections: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

struct Options {
  long connections = 1000;
  int listeners = 8;
  long per_source = 16000;
  double hold_seconds = 600;
};

bool number(const char* text, long min, long max, long& out) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < min || v > max) return false;
  out = v;
  return true;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "netmon-hold-connections: %s needs a value\n", argv[i]);
      std::exit(2);
    }
    const char* v = argv[++i];
    long n = 0;
    bool ok = false;
    if (a == "--connections") {
      ok = number(v, 1, 500000, o.connections);
    } else if (a == "--listeners") {
      ok = number(v, 1, 256, n);
      o.listeners = static_cast<int>(n);
    } else if (a == "--per-source") {
      ok = number(v, 1, 25000, o.per_source);
    } else if (a == "--hold-seconds") {
      ok = number(v, 1, 3600, n);
      o.hold_seconds = static_cast<double>(n);
    }
    if (!ok) {
      std::fprintf(stderr, "netmon-hold-connections: bad option %s %s\n", argv[i - 1], v);
      std::exit(2);
    }
  }
  return o;
}

// Raises RLIMIT_NOFILE to `want` (the hard limit too, which needs CAP_SYS_RESOURCE); without
// that capability, the soft limit to the hard one. Returns the soft limit now in force.
rlim_t raise_nofile(rlim_t want) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) die("getrlimit");
  if (lim.rlim_cur >= want) return lim.rlim_cur;
  rlimit raised{want, lim.rlim_max < want ? want : lim.rlim_max};
  if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) return want;
  raised = {lim.rlim_max, lim.rlim_max};
  if (::setrlimit(RLIMIT_NOFILE, &raised) != 0) die("raising RLIMIT_NOFILE to its hard limit");
  return lim.rlim_max;
}

sockaddr_in loopback(uint32_t host_order_addr, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(host_order_addr);
  a.sin_port = htons(static_cast<uint16_t>(port));
  return a;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Accepts, without blocking, what the listeners' queues hold; returns how many.
long drain_accepts(const std::vector<int>& listeners, std::vector<int>& accepted) {
  long n = 0;
  for (int l : listeners) {
    for (;;) {
      const int fd = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        die("accept4");
      }
      accepted.push_back(fd);
      ++n;
    }
  }
  return n;
}

void close_with_reset(int fd) {
  const linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

// One worker: opens connections [first, last) (their client ends bound to 127.0.0.(2 + i /
// per_source)) to `listeners` listeners of its own, both ends held here; writes one JSON line to
// `report` once they are all established and accepted, holds them until SIGTERM or the bound,
// then closes them with a reset. Returns the exit code.
int worker(const Options& o, long first, long last, int report) {
  const auto started = std::chrono::steady_clock::now();
  std::vector<int> listeners;
  std::vector<int> ports;
  for (int i = 0; i < o.listeners; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a = loopback(INADDR_LOOPBACK, 0);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("binding a listener");
    if (::listen(fd, 4096) != 0) die("listen");
    socklen_t len = sizeof a;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) die("getsockname");
    listeners.push_back(fd);
    ports.push_back(ntohs(a.sin_port));
  }

  // Blocking connects in batches, the listeners' queues drained between batches, so that no
  // queue (somaxconn, 4096 by default) overflows: an overflow drops the SYN and the connect()
  // would wait a second for its retry.
  const long batch = 64L * o.listeners;
  std::vector<int> clients;
  std::vector<int> accepted;
  clients.reserve(static_cast<size_t>(last - first));
  accepted.reserve(static_cast<size_t>(last - first));
  const timeval timeout{10, 0};
  for (long i = first; i < last && !g_stop; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket (connection " + std::to_string(i) + ")");
    const int one = 1;
    ::setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);  // bounds connect()
    const long source = i / o.per_source;  // 127.0.0.2, 127.0.0.3, ...
    sockaddr_in from = loopback(INADDR_LOOPBACK + 1 + static_cast<uint32_t>(source), 0);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0) die("binding a client");
    sockaddr_in to = loopback(INADDR_LOOPBACK, ports[static_cast<size_t>(i % o.listeners)]);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
      die("connect (connection " + std::to_string(i) + ")");
    }
    clients.push_back(fd);
    if (static_cast<long>(clients.size()) % batch == 0) drain_accepts(listeners, accepted);
  }
  // The rest of the accepts, bounded in time.
  const auto accept_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!g_stop && accepted.size() < clients.size()) {
    if (std::chrono::steady_clock::now() > accept_deadline) {
      errno = ETIMEDOUT;
      die("accepting: " + std::to_string(accepted.size()) + " of " +
          std::to_string(clients.size()));
    }
    if (drain_accepts(listeners, accepted) == 0) ::usleep(1000);
  }
  if (g_stop) return 1;

  std::string line = "{\"pid\":" + std::to_string(::getpid()) +
                     ",\"connections\":" + std::to_string(clients.size()) + ",\"ports\":[";
  for (size_t i = 0; i < ports.size(); ++i) line += (i ? "," : "") + std::to_string(ports[i]);
  char open_s[32];
  std::snprintf(open_s, sizeof open_s, "%.3f", seconds_since(started));
  line += std::string("],\"open_s\":") + open_s + "}\n";
  if (::write(report, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    die("reporting to the parent");
  }
  ::close(report);

  const auto hold_until =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(o.hold_seconds + 30);
  while (!g_stop && std::chrono::steady_clock::now() < hold_until) ::poll(nullptr, 0, 200);
  for (int fd : clients) close_with_reset(fd);
  for (int fd : accepted) close_with_reset(fd);
  for (int fd : listeners) ::close(fd);
  return 0;
}

// Waits for `pid` up to `seconds`, then kills it. Returns whether it exited with 0 by itself.
bool reap(pid_t pid, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (r < 0 && errno != EINTR) return false;
    if (std::chrono::steady_clock::now() > until) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return false;
    }
    ::poll(nullptr, 0, 10);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  if ((o.connections - 1) / o.per_source + 2 > 254) {
    std::fprintf(stderr, "netmon-hold-connections: too many connections for 127.0.0.2-254\n");
    return 2;
  }
  // Each worker holds both ends of its connections: 2 descriptors each, plus its listeners.
  const rlim_t limit = raise_nofile(static_cast<rlim_t>(2 * o.connections + o.listeners + 64));
  const long reserve = o.listeners + 64;
  if (limit <= static_cast<rlim_t>(reserve + 2)) {
    std::fprintf(stderr, "netmon-hold-connections: RLIMIT_NOFILE %llu is too low\n",
                 static_cast<unsigned long long>(limit));
    return 1;
  }
  const long per_worker = (static_cast<long>(limit) - reserve) / 2;
  const long workers = (o.connections + per_worker - 1) / per_worker;

  const auto started = std::chrono::steady_clock::now();
  std::vector<pid_t> pids;
  std::vector<int> reports;
  bool failed = false;
  for (long w = 0; w < workers; ++w) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) die("pipe2");
    const long first = w * o.connections / workers;
    const long last = (w + 1) * o.connections / workers;
    const pid_t pid = ::fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // never outlives the parent
      if (::getppid() == 1) ::_exit(1);
      ::close(fds[0]);
      for (int r : reports) ::close(r);
      std::fflush(stdout);
      ::_exit(worker(o, first, last, fds[1]));
    }
    ::close(fds[1]);
    pids.push_back(pid);
    reports.push_back(fds[0]);
  }

  // The workers' reports, bounded: 60 s plus 1 ms a connection.
  const auto ready_deadline = started + std::chrono::milliseconds(60'000 + o.connections);
  std::string ready_pids;
  std::string ready_ports;
  long ready = 0;
  for (size_t w = 0; w < reports.size() && !failed; ++w) {
    std::string text;
    char buf[4096];
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            ready_deadline - std::chrono::steady_clock::now())
                            .count();
      pollfd p{reports[w], POLLIN, 0};
      if (left <= 0 || g_stop ||
          (::poll(&p, 1, static_cast<int>(left < 200 ? left : 200)) < 0 && errno != EINTR)) {
        failed = true;
        break;
      }
      if (!(p.revents & (POLLIN | POLLHUP))) continue;
      const ssize_t n = ::read(reports[w], buf, sizeof buf);
      if (n <= 0) break;
      text.append(buf, static_cast<size_t>(n));
    }
    const auto at = text.find("\"connections\":");
    const auto ports_at = text.find("\"ports\":[");
    if (failed || at == std::string::npos || ports_at == std::string::npos) {
      failed = true;
      break;
    }
    ready += std::strtol(text.c_str() + at + 14, nullptr, 10);
    ready_pids += (w ? "," : "") + std::to_string(pids[w]);
    const auto ports_end = text.find(']', ports_at);
    ready_ports += (w ? "," : "") + text.substr(ports_at + 9, ports_end - ports_at - 9);
  }
  for (int r : reports) ::close(r);

  if (!failed) {
    char open_s[32];
    std::snprintf(open_s, sizeof open_s, "%.3f", seconds_since(started));
    std::printf(
        "{\"ready\":%ld,\"pid\":%d,\"workers\":[%s],\"nofile\":%llu,\"listen_addr\":"
        "\"127.0.0.1\",\"ports\":[%s],\"sources\":%ld,\"open_s\":%s}\n",
        ready, static_cast<int>(::getpid()), ready_pids.c_str(),
        static_cast<unsigned long long>(limit), ready_ports.c_str(),
        (o.connections - 1) / o.per_source + 1, open_s);
    std::fflush(stdout);
    // Hold: until stdin has a line or ends, a signal, or the bound.
    const auto hold_until =
        std::chrono::steady_clock::now() + std::chrono::duration<double>(o.hold_seconds);
    while (!g_stop && std::chrono::steady_clock::now() < hold_until) {
      pollfd p{STDIN_FILENO, POLLIN, 0};
      const int r = ::poll(&p, 1, 200);
      if (r > 0) break;  // a line, the end of stdin or an error: close
      if (r < 0 && errno != EINTR) break;
    }
  } else {
    std::fprintf(stderr, "netmon-hold-connections: a worker did not get its connections ready\n");
  }
  bool clean = true;
  for (pid_t pid : pids) ::kill(pid, SIGTERM);
  for (pid_t pid : pids) clean = reap(pid, 30) && clean;
  std::printf("{\"closed\":%ld,\"clean\":%s}\n", failed ? 0 : ready, clean ? "true" : "false");
  return failed || !clean ? 1 : 0;
}
