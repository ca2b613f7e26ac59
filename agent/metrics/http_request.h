// The request side of the agent's HTTP endpoint, apart from any socket so that it can be unit
// tested and fuzzed: parses the head of one HTTP/1.x request from the bytes received so far.
#pragma once

#include <cstddef>
#include <string_view>

namespace netmon {

struct HttpRequestHead {
  enum class State {
    kIncomplete,  // no end of the header section yet: read more (within the size bound)
    kComplete,    // method, target and version parsed; the header section ended
    kBad,         // not an HTTP/1.x request: answer 400 and close
    kTooLarge,    // no end of the header section within the bound: answer 431 and close
  };
  State state = State::kIncomplete;
  std::string_view method;  // "GET", "HEAD", ... (a view into the parsed buffer)
  std::string_view path;    // the request target without its query string, e.g. "/metrics"
};

// The bound on a request head (request line and headers): probes and Prometheus send a few
// hundred bytes.
inline constexpr std::size_t kMaxRequestHeadBytes = 8192;

// Parses `received`, the bytes of a connection so far. Never reads past `received`, never
// allocates; the views in the result point into `received`.
HttpRequestHead parse_request_head(std::string_view received);

}  // namespace netmon
