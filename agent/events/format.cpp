#include "events/format.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>

namespace netmon {

void append_address(std::string& out, const IpAddress& address) {
  char buf[INET6_ADDRSTRLEN];
  const uint8_t* b = address.bytes.data();
  static constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (address.family == IpAddress::Family::kV4) {
    inet_ntop(AF_INET, b, buf, sizeof(buf));
  } else if (std::memcmp(b, kMappedPrefix, sizeof(kMappedPrefix)) == 0) {
    inet_ntop(AF_INET, b + 12, buf, sizeof(buf));
  } else {
    inet_ntop(AF_INET6, b, buf, sizeof(buf));
  }
  out += buf;
}

std::string format_address(const IpAddress& address) {
  std::string out;
  append_address(out, address);
  return out;
}

std::string connect_error_name(int error) {
  if (error == 0) return "ECONNABORTED";
  // strerrorname_np (glibc 2.32+) knows every errno of the C library's kernel headers.
  if (const char* name = strerrorname_np(error)) return name;
  return "E" + std::to_string(error);
}

}  // namespace netmon
