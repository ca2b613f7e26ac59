#include "metrics/http_server.h"

#include <httplib.h>

#include <charconv>
#include <chrono>
#include <thread>

#include "common/text.h"

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

struct HttpServer::Impl {
  httplib::Server server;
  std::thread thread;
  int port = 0;
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

int HttpServer::port() const { return impl_->port; }

Result<std::unique_ptr<HttpServer>> HttpServer::start(const ListenAddress& address,
                                                      std::function<std::string()> render_metrics,
                                                      std::function<std::string()> ready) {
  auto impl = std::make_unique<Impl>();
  impl->server.Get("/metrics", [render_metrics](const httplib::Request&, httplib::Response& res) {
    res.set_content(render_metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  impl->server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  impl->server.Get("/readyz", [ready](const httplib::Request&, httplib::Response& res) {
    const std::string reason = ready();
    if (reason.empty()) {
      res.set_content("ready\n", "text/plain");
    } else {
      res.status = 503;
      res.set_content("not ready: " + reason + "\n", "text/plain");
    }
  });
  // httplib's default sets SO_REUSEPORT, which would let a second agent share the port and
  // split the scrapes: take SO_REUSEADDR only, so a busy port is a start-up error.
  impl->server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  impl->server.set_read_timeout(5, 0);
  impl->server.set_write_timeout(5, 0);
  if (address.port == 0) {
    impl->port = impl->server.bind_to_any_port(address.host);
  } else if (impl->server.bind_to_port(address.host, address.port)) {
    impl->port = address.port;
  } else {
    impl->port = -1;
  }
  if (impl->port <= 0) {
    return fail("cannot listen on " + address.host + ":" + std::to_string(address.port) +
                " (address in use, or not an address of this host)");
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->server.listen_after_bind(); });
  // stop() before the listen loop has begun is lost (httplib marks the server running only
  // inside it): wait until it runs, so the destructor can always stop it.
  for (int i = 0; i < 2000 && !impl->server.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

}  // namespace netmon
