#include "events/format.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>

namespace netmon {

namespace {

// Dotted quad without printf (inet_ntop formats IPv4 with sprintf): on the per-event path.
void append_ipv4(std::string& out, const uint8_t* b) {
  char buf[16];
  size_t n = 0;
  for (int i = 0; i < 4; ++i) {
    const unsigned v = b[i];
    if (v >= 100) buf[n++] = static_cast<char>('0' + v / 100);
    if (v >= 10) buf[n++] = static_cast<char>('0' + v / 10 % 10);
    buf[n++] = static_cast<char>('0' + v % 10);
    if (i < 3) buf[n++] = '.';
  }
  out.append(buf, n);
}

}  // namespace

void append_address(std::string& out, const IpAddress& address) {
  const uint8_t* b = address.bytes.data();
  static constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (address.family == IpAddress::Family::kV4) {
    append_ipv4(out, b);
  } else if (std::memcmp(b, kMappedPrefix, sizeof(kMappedPrefix)) == 0) {
    append_ipv4(out, b + 12);
  } else {
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, b, buf, sizeof(buf));
    out += buf;
  }
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
