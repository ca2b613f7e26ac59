// HttpServer: the agent's one HTTP endpoint: GET /metrics (Prometheus text format), /healthz
// (alive) and /readyz (probes attached, first kubelet sync done when enrichment is on).
//
// One thread serves every connection from one poll(2) loop, so no client can hold a worker
// that a probe needs: a request head must arrive whole within a deadline and a size bound,
// each reply is written without blocking and closes its connection, and past a connection limit
// the connection that has waited longest without sending a whole request is closed to make room.
// So idle and slow ("slowloris") clients, however many, cannot keep the kubelet's liveness probe
// from an answer (docs/reliability.md).
#pragma once

#include <chrono>
#include <cstddef>

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

struct HttpServerLimits {
  // Open connections at once; past it the oldest connection without a whole request is closed.
  std::size_t max_connections = 128;
  // From accept to the end of the request head; then the connection is closed unanswered.
  std::chrono::milliseconds request_timeout{5000};
  // From the whole request to the last byte of the reply written; then the connection is closed.
  std::chrono::milliseconds write_timeout{10000};
};

class HttpServer {
 public:
  // `render_metrics` and `ready` are called on the server's thread. `ready` returns "" when
  // ready, else the reason it is not.
  static Result<std::unique_ptr<HttpServer>> start(const ListenAddress& address,
                                                   std::function<std::string()> render_metrics,
                                                   std::function<std::string()> ready,
                                                   HttpServerLimits limits = {});
  ~HttpServer();  // stops and joins
  int port() const;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace netmon
