#include "metrics/http_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/text.h"
#include "common/unique_fd.h"
#include "metrics/http_request.h"

namespace netmon {

Result<ListenAddress> parse_listen_address(std::string_view text) {
  ListenAddress a;
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return fail(quoted(text) + " is not [IPV6]:PORT");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return fail(quoted(text) + " is not HOST:PORT");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  int p = -1;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc() || end != port.data() + port.size() || p < 0 || p > 65535) {
    return fail(quoted(port) + " is not a port number");
  }
  a.host = host.empty() ? "0.0.0.0" : std::string(host);
  a.port = p;
  return a;
}

namespace {

using Clock = std::chrono::steady_clock;

struct Connection {
  UniqueFd fd;
  std::string received;
  std::string reply;  // set once the request head is whole
  size_t written = 0;
  Clock::time_point accepted;
  Clock::time_point deadline;
  bool replying() const { return !reply.empty(); }
};

std::string response(int status, std::string_view reason, std::string_view content_type,
                     std::string_view body, bool head_only, std::string_view extra_headers = {}) {
  std::string out = "HTTP/1.1 ";
  out += std::to_string(status);
  out += ' ';
  out += reason;
  out += "\r\nContent-Type: ";
  out += content_type;
  out += "\r\nContent-Length: ";
  out += std::to_string(body.size());
  out += "\r\nConnection: close\r\n";
  out += extra_headers;
  out += "\r\n";
  if (!head_only) out += body;
  return out;
}

}  // namespace

struct HttpServer::Impl {
  UniqueFd listener;
  UniqueFd wake;  // eventfd: written once to stop the thread
  std::thread thread;
  int port = 0;
  HttpServerLimits limits;
  std::function<std::string()> render_metrics;
  std::function<std::string()> ready;
  std::vector<Connection> connections;

  void run();
  void accept_all(Clock::time_point now);
  // Reads what `c` sent; false when the connection is to be closed.
  bool read_request(Connection& c, Clock::time_point now);
  // Writes what the socket takes; false when the connection is to be closed (done or failed).
  static bool write_reply(Connection& c);
  std::string answer(const HttpRequestHead& head);
};

std::string HttpServer::Impl::answer(const HttpRequestHead& head) {
  using State = HttpRequestHead::State;
  constexpr std::string_view kText = "text/plain; charset=utf-8";
  if (head.state == State::kTooLarge) {
    return response(431, "Request Header Fields Too Large", kText, "request head too large\n",
                    false);
  }
  if (head.state == State::kBad) return response(400, "Bad Request", kText, "bad request\n", false);
  const bool head_only = head.method == "HEAD";
  if (head.method != "GET" && !head_only) {
    return response(405, "Method Not Allowed", kText, "only GET and HEAD\n", false,
                    "Allow: GET, HEAD\r\n");
  }
  if (head.path == "/healthz") return response(200, "OK", kText, "ok\n", head_only);
  if (head.path == "/readyz") {
    const std::string reason = ready();
    if (reason.empty()) return response(200, "OK", kText, "ready\n", head_only);
    return response(503, "Service Unavailable", kText, "not ready: " + reason + "\n", head_only);
  }
  if (head.path == "/metrics") {
    try {
      return response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", render_metrics(),
                      head_only);
    } catch (const std::exception& e) {
      return response(500, "Internal Server Error", kText, std::string(e.what()) + "\n", head_only);
    }
  }
  return response(404, "Not Found", kText, "not found\n", head_only);
}

void HttpServer::Impl::accept_all(Clock::time_point now) {
  // A bounded batch per wakeup, so the connections already open are served in between.
  for (int i = 0; i < 256; ++i) {
    UniqueFd fd(::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) return;  // EAGAIN, or a connection reset before it was accepted
    if (connections.size() >= limits.max_connections) {
      // Make room: the connection that has waited longest without a whole request goes. One
      // that is being answered is kept; when all are, the new one is refused.
      auto oldest = connections.end();
      for (auto it = connections.begin(); it != connections.end(); ++it) {
        if (!it->replying() && (oldest == connections.end() || it->accepted < oldest->accepted)) {
          oldest = it;
        }
      }
      if (oldest == connections.end()) continue;  // fd closes here
      *oldest = std::move(connections.back());
      connections.pop_back();
    }
    Connection c;
    c.fd = std::move(fd);
    c.accepted = now;
    c.deadline = now + limits.request_timeout;
    connections.push_back(std::move(c));
  }
}

bool HttpServer::Impl::read_request(Connection& c, Clock::time_point now) {
  char buffer[4096];
  while (c.received.size() <= kMaxRequestHeadBytes) {
    const ssize_t n = ::recv(c.fd.get(), buffer, sizeof(buffer), 0);
    if (n > 0) {
      c.received.append(buffer, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return false;  // closed by the client before a whole request, or an error
  }
  const HttpRequestHead head = parse_request_head(c.received);
  if (head.state == HttpRequestHead::State::kIncomplete) return true;
  c.reply = answer(head);
  c.received.clear();
  c.received.shrink_to_fit();
  c.deadline = now + limits.write_timeout;
  return write_reply(c);
}

bool HttpServer::Impl::write_reply(Connection& c) {
  while (c.written < c.reply.size()) {
    const ssize_t n =
        ::send(c.fd.get(), c.reply.data() + c.written, c.reply.size() - c.written, MSG_NOSIGNAL);
    if (n > 0) {
      c.written += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);  // wait for POLLOUT, or failed
  }
  ::shutdown(c.fd.get(), SHUT_WR);
  return false;  // answered: close
}

void HttpServer::Impl::run() {
  std::vector<pollfd> fds;
  for (;;) {
    const Clock::time_point before = Clock::now();
    Clock::time_point next = before + std::chrono::seconds(1);
    fds.clear();
    fds.push_back({wake.get(), POLLIN, 0});
    fds.push_back({listener.get(), POLLIN, 0});
    for (const Connection& c : connections) {
      fds.push_back({c.fd.get(), static_cast<short>(c.replying() ? POLLOUT : POLLIN), 0});
      next = std::min(next, c.deadline);
    }
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - before);
    const int ready_count = ::poll(fds.data(), fds.size(), static_cast<int>(wait.count()) + 1);
    if (ready_count < 0 && errno != EINTR) return;
    if (fds[0].revents != 0) return;  // stop
    const Clock::time_point now = Clock::now();
    // Walk the connections polled (the vector may shrink from the back while walking).
    for (size_t i = connections.size(); i-- > 0;) {
      Connection& c = connections[i];
      const short revents = fds[i + 2].revents;
      bool keep = now < c.deadline;
      if (keep && (revents & POLLNVAL)) keep = false;
      if (keep && !c.replying() && (revents & (POLLIN | POLLHUP | POLLERR))) {
        keep = read_request(c, now);
      } else if (keep && c.replying() && (revents & (POLLOUT | POLLHUP | POLLERR))) {
        keep = write_reply(c);
      }
      if (!keep) {
        if (i + 1 != connections.size()) c = std::move(connections.back());
        connections.pop_back();
      }
    }
    if (fds[1].revents & POLLIN) accept_all(now);
  }
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  const uint64_t one = 1;
  if (::write(impl_->wake.get(), &one, sizeof(one)) < 0) {
    // An eventfd write fails only on counter overflow, which one write cannot reach.
  }
  if (impl_->thread.joinable()) impl_->thread.join();
}

int HttpServer::port() const { return impl_->port; }

Result<std::unique_ptr<HttpServer>> HttpServer::start(const ListenAddress& address,
                                                      std::function<std::string()> render_metrics,
                                                      std::function<std::string()> ready,
                                                      HttpServerLimits limits) {
  const std::string where = address.host + ":" + std::to_string(address.port);
  const auto cannot_listen = [&where](int error) {
    return fail("cannot listen on " + where +
                    " (address in use, or not an address of this host): " + std::strerror(error),
                error);
  };
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(address.port);
  if (const int rc = ::getaddrinfo(address.host.c_str(), service.c_str(), &hints, &found);
      rc != 0) {
    return fail("cannot listen on " + where + ": " + ::gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> owned(found, &::freeaddrinfo);

  auto impl = std::make_unique<Impl>();
  impl->limits = limits;
  impl->render_metrics = std::move(render_metrics);
  impl->ready = std::move(ready);
  impl->listener.reset(
      ::socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, found->ai_protocol));
  if (!impl->listener.valid()) return cannot_listen(errno);
  // SO_REUSEADDR only, never SO_REUSEPORT: a second agent must not share the port and split the
  // scrapes, so a busy port is a start-up error.
  const int yes = 1;
  ::setsockopt(impl->listener.get(), SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  if (::bind(impl->listener.get(), found->ai_addr, found->ai_addrlen) != 0 ||
      ::listen(impl->listener.get(), 1024) != 0) {
    return cannot_listen(errno);
  }
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  if (::getsockname(impl->listener.get(), reinterpret_cast<sockaddr*>(&bound), &length) != 0) {
    return cannot_listen(errno);
  }
  impl->port =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  impl->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl->wake.valid()) return fail(std::string("eventfd: ") + std::strerror(errno), errno);
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

}  // namespace netmon
