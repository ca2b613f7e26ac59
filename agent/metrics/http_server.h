// HttpServer: the agent's one HTTP endpoint: GET /metrics (Prometheus text format), /healthz
// (alive) and /readyz (probes attached, first kubelet sync done when enrichment is on). Runs its
// own thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"

namespace netmon {

struct ListenAddress {
  std::string host;  // "0.0.0.0", "127.0.0.1", "::"
  int port = 0;      // 0: any free port
};
// Parses "HOST:PORT", "[V6]:PORT" or ":PORT" (all addresses).
Result<ListenAddress> parse_listen_address(std::string_view text);

class HttpServer {
 public:
  // `render_metrics` and `ready` are called on the server's thread. `ready` returns "" when
  // ready, else the reason it is not.
  static Result<std::unique_ptr<HttpServer>> start(const ListenAddress& address,
                                                   std::function<std::string()> render_metrics,
                                                   std::function<std::string()> ready);
  ~HttpServer();  // stops and joins
  int port() const;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace netmon
