// libFuzzer target for the request path of the agent's HTTP endpoint (agent/metrics): any bytes a
// client may send, fed to the parser whole and as every prefix the server could see while the
// bytes arrive. Nothing may crash or trip a sanitizer; a complete head's views lie inside the
// input, and the state of a prefix never contradicts the whole (a head that is complete or bad
// stays so, apart from the size bound).
//
// Build and run (scripts/fuzz.sh does both):
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I agent \
//     tests/fuzz/http_request_fuzz.cpp agent/metrics/http_request.cpp -o /tmp/http_request_fuzz
//   /tmp/http_request_fuzz -max_total_time=60 -max_len=16384
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "metrics/http_request.h"

namespace {

bool inside(std::string_view part, std::string_view whole) {
  return part.empty() ||
         (part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  using State = netmon::HttpRequestHead::State;
  const netmon::HttpRequestHead whole = netmon::parse_request_head(input);
  if (!inside(whole.method, input) || !inside(whole.path, input)) std::abort();
  if (whole.state == State::kComplete) {
    if (whole.method.empty() || whole.path.empty() || whole.path.front() != '/') std::abort();
  }
  for (size_t cut = 0; cut < size && cut <= netmon::kMaxRequestHeadBytes; cut += 7) {
    const auto prefix = netmon::parse_request_head(input.substr(0, cut));
    if (prefix.state == State::kComplete && whole.state != State::kComplete) std::abort();
  }
  return 0;
}
