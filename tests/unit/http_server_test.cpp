// The agent's HTTP endpoint under hostile clients: the request-head parser alone, and the server
// with idle, slow and oversized clients while probes must still be answered.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "metrics/http_request.h"
#include "metrics/http_server.h"

namespace netmon {
namespace {

using State = HttpRequestHead::State;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

TEST(HttpRequestHead, ParsesARequestLineAndDropsTheQuery) {
  const auto head = parse_request_head("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(head.state, State::kComplete);
  EXPECT_EQ(head.method, "GET");
  EXPECT_EQ(head.path, "/metrics");
  EXPECT_EQ(parse_request_head("HEAD /healthz HTTP/1.0\n\n").state, State::kComplete);
}

TEST(HttpRequestHead, WaitsForTheEndOfTheHeaders) {
  EXPECT_EQ(parse_request_head("").state, State::kIncomplete);
  EXPECT_EQ(parse_request_head("GET /metrics HTTP/1.1\r\nHost: a\r\n").state, State::kIncomplete);
  EXPECT_EQ(parse_request_head("GE").state, State::kIncomplete);
}

TEST(HttpRequestHead, RefusesWhatIsNotHttp) {
  EXPECT_EQ(parse_request_head("\x16\x03\x01\x02").state, State::kBad);  // a TLS hello
  EXPECT_EQ(parse_request_head("GET /metrics\r\n\r\n").state, State::kBad);
  EXPECT_EQ(parse_request_head("GET metrics HTTP/1.1\r\n\r\n").state, State::kBad);
  EXPECT_EQ(parse_request_head("GET /a b HTTP/1.1\r\n\r\n").state, State::kBad);
  EXPECT_EQ(parse_request_head("GET /m HTTP/2.0\r\n\r\n").state, State::kBad);
  EXPECT_EQ(parse_request_head(" /m HTTP/1.1\r\n\r\n").state, State::kBad);
  EXPECT_EQ(parse_request_head(std::string_view("GET /\0 HTTP/1.1\r\n\r\n", 20)).state,
            State::kBad);
}

TEST(HttpRequestHead, BoundsTheHead) {
  std::string head = "GET /metrics HTTP/1.1\r\n";
  while (head.size() <= kMaxRequestHeadBytes) head += "X-Filler: aaaaaaaaaaaaaaaaaaaaaaaa\r\n";
  EXPECT_EQ(parse_request_head(head).state, State::kTooLarge);
  EXPECT_EQ(parse_request_head(head + "\r\n").state, State::kTooLarge);
}

// A client socket connected to 127.0.0.1:port, or an invalid fd.
UniqueFd connect_to(int port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (!fd.valid() || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    return UniqueFd();
  }
  return fd;
}

// Sends `request` and reads until the server closes or `timeout` passes; "" on failure.
std::string exchange(int port, const std::string& request, milliseconds timeout) {
  UniqueFd fd = connect_to(port);
  if (!fd.valid()) return "";
  if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    return "";
  }
  std::string reply;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return "";
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buffer[4096];
    const ssize_t n = ::recv(fd.get(), buffer, sizeof(buffer), 0);
    if (n <= 0) return reply;
    reply.append(buffer, static_cast<size_t>(n));
  }
}

std::string get(int port, const std::string& path, milliseconds timeout = milliseconds(1000)) {
  return exchange(port, "GET " + path + " HTTP/1.1\r\nHost: t\r\n\r\n", timeout);
}

class HttpServerHostile : public ::testing::Test {
 protected:
  void start(HttpServerLimits limits = {}) {
    auto server = HttpServer::start(
        ListenAddress{.host = "127.0.0.1", .port = 0}, [] { return std::string("netmon_x 1\n"); },
        [] { return std::string("kubelet: 401 Unauthorized"); }, limits);
    ASSERT_TRUE(server) << server.error().message;
    server_ = std::move(*server);
    port_ = server_->port();
  }
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

TEST_F(HttpServerHostile, AnswersMethodsAndErrors) {
  start();
  EXPECT_EQ(get(port_, "/healthz").rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  const std::string ready = get(port_, "/readyz");
  EXPECT_EQ(ready.rfind("HTTP/1.1 503 ", 0), 0u) << ready;
  EXPECT_NE(ready.find("\r\n\r\nnot ready: kubelet: 401 Unauthorized\n"), std::string::npos);
  const std::string head = exchange(port_, "HEAD /metrics HTTP/1.1\r\n\r\n", milliseconds(1000));
  EXPECT_NE(head.find("Content-Length: 11\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.substr(head.size() - 4), "\r\n\r\n") << "HEAD has no body";
  EXPECT_EQ(exchange(port_, "POST /metrics HTTP/1.1\r\n\r\n", milliseconds(1000))
                .rfind("HTTP/1.1 405 ", 0),
            0u);
  EXPECT_EQ(
      exchange(port_, "\x16\x03\x01 hello\r\n\r\n", milliseconds(1000)).rfind("HTTP/1.1 400 ", 0),
      0u);
  EXPECT_EQ(get(port_, "/nope").rfind("HTTP/1.1 404 ", 0), 0u);
  std::string huge = "GET /metrics HTTP/1.1\r\nX: " + std::string(20000, 'a');
  EXPECT_EQ(exchange(port_, huge, milliseconds(1000)).rfind("HTTP/1.1 431 ", 0), 0u);
}

TEST_F(HttpServerHostile, ClosesAClientThatNeverFinishesItsRequest) {
  start(HttpServerLimits{.request_timeout = milliseconds(300)});
  UniqueFd idle = connect_to(port_);
  ASSERT_TRUE(idle.valid());
  ASSERT_EQ(::send(idle.get(), "GET /metr", 9, MSG_NOSIGNAL), 9);
  pollfd p{idle.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 3000), 1) << "not closed within 10 times its deadline";
  char c;
  EXPECT_EQ(::recv(idle.get(), &c, 1, 0), 0) << "closed without an answer";
}

// The fault of issue #17: 8 idle connections made /healthz time out with the thread-pool
// server. Here: far more idle and slow clients than the connection limit, and every probe is
// answered within a second while they stay.
TEST_F(HttpServerHostile, IdleAndSlowClientsCannotStarveTheProbes) {
  start(HttpServerLimits{.max_connections = 64});
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 300; ++i) {
    UniqueFd fd = connect_to(port_);
    ASSERT_TRUE(fd.valid()) << i;
    idle.push_back(std::move(fd));
  }
  std::vector<UniqueFd> slow;
  for (int i = 0; i < 30; ++i) {
    UniqueFd fd = connect_to(port_);
    ASSERT_TRUE(fd.valid());
    ASSERT_EQ(::send(fd.get(), "G", 1, MSG_NOSIGNAL), 1);
    slow.push_back(std::move(fd));
  }
  for (int round = 0; round < 10; ++round) {
    for (auto& fd : slow) ::send(fd.get(), "E", 1, MSG_NOSIGNAL);  // a byte now and then
    // get() gives up after 1 s: the bound for a probe's answer.
    const std::string reply = get(port_, round % 2 ? "/healthz" : "/metrics", milliseconds(1000));
    EXPECT_EQ(reply.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << "round " << round;
  }
}

}  // namespace
}  // namespace netmon
