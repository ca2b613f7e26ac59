#include "events/format.h"

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

// RFC 5952 text of an IPv6 address, exactly as glibc's inet_ntop writes it (which formats every
// group with sprintf, a fifth of the pipeline's time on IPv6 events): lowercase groups without
// leading zeros, the first longest run of two or more zero groups as "::", and the last 32 bits
// as a dotted quad for IPv4-compatible addresses (::a.b.c.d, ::ffff:a.b.c.d).
void append_ipv6(std::string& out, const uint8_t* b) {
  static constexpr char kHex[] = "0123456789abcdef";
  uint16_t w[8];
  for (int i = 0; i < 8; ++i) w[i] = static_cast<uint16_t>(b[2 * i] << 8 | b[2 * i + 1]);
  int best = -1;
  int best_len = 0;
  for (int i = 0; i < 8;) {
    if (w[i] != 0) {
      ++i;
      continue;
    }
    int j = i;
    while (j < 8 && w[j] == 0) ++j;
    if (j - i > best_len) best = i, best_len = j - i;
    i = j;
  }
  if (best_len < 2) best = -1;
  char buf[48];
  char* p = buf;
  for (int i = 0; i < 8; ++i) {
    if (best >= 0 && i >= best && i < best + best_len) {
      if (i == best) *p++ = ':';
      continue;
    }
    if (i != 0) *p++ = ':';
    if (i == 6 && best == 0 && (best_len == 6 || (best_len == 5 && w[5] == 0xffff))) {
      out.append(buf, p);
      append_ipv4(out, b + 12);
      return;
    }
    bool digits = false;
    for (int shift = 12; shift >= 0; shift -= 4) {
      const unsigned d = (w[i] >> shift) & 0xf;
      if (d != 0 || digits || shift == 0) {
        *p++ = kHex[d];
        digits = true;
      }
    }
  }
  if (best >= 0 && best + best_len == 8) *p++ = ':';
  out.append(buf, p);
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
    append_ipv6(out, b);
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
  // Appended, not `"E" + std::to_string(error)`: GCC 12 at -O3 reports a false -Wrestrict on
  // operator+(const char*, std::string&&).
  std::string name = "E";
  name += std::to_string(error);
  return name;
}

}  // namespace netmon
