#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <random>
#include <string>

#include "events/format.h"

namespace netmon {
namespace {

IpAddress v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  IpAddress ip;
  ip.family = IpAddress::Family::kV4;
  ip.bytes = {a, b, c, d};
  return ip;
}

IpAddress v6(const std::array<uint8_t, 16>& bytes) {
  IpAddress ip;
  ip.family = IpAddress::Family::kV6;
  ip.bytes = bytes;
  return ip;
}

TEST(FormatAddress, Ipv4DottedQuad) {
  EXPECT_EQ(format_address(v4(127, 0, 0, 1)), "127.0.0.1");
  EXPECT_EQ(format_address(v4(192, 168, 1, 254)), "192.168.1.254");
  EXPECT_EQ(format_address(v4(0, 0, 0, 0)), "0.0.0.0");
  EXPECT_EQ(format_address(v4(255, 255, 255, 255)), "255.255.255.255");
}

TEST(FormatAddress, Ipv6CompressesZeroRun) {
  EXPECT_EQ(format_address(v6({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})),
            "2001:db8::1");
}

TEST(FormatAddress, Ipv6Loopback) {
  EXPECT_EQ(format_address(v6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})), "::1");
}

TEST(FormatAddress, Ipv6Unspecified) { EXPECT_EQ(format_address(v6({})), "::"); }

TEST(FormatAddress, Ipv6WithoutZeroRunIsFullAndLowercase) {
  EXPECT_EQ(format_address(v6({0xfe, 0x80, 0x12, 0x34, 0xab, 0xcd, 0, 1, 0xde, 0xad, 0xbe, 0xef,
                               0xca, 0xfe, 0xf0, 0x0d})),
            "fe80:1234:abcd:1:dead:beef:cafe:f00d");
}

TEST(FormatAddress, Ipv4MappedIpv6IsPlainIpv4) {
  EXPECT_EQ(format_address(v6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1})),
            "10.0.0.1");
}

TEST(FormatAddress, NearlyMappedIpv6StaysIpv6) {
  // ::fffe:a00:1 differs from the mapped prefix in one byte.
  EXPECT_EQ(format_address(v6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 10, 0, 0, 1})),
            "::fffe:a00:1");
}

// The formatter replaced glibc's inet_ntop for speed: its text must stay the same, byte for byte.
std::string glibc_text(const std::array<uint8_t, 16>& bytes) {
  char buf[INET6_ADDRSTRLEN];
  return inet_ntop(AF_INET6, bytes.data(), buf, sizeof(buf)) ? buf : "(inet_ntop failed)";
}

bool is_v4_mapped(const std::array<uint8_t, 16>& b) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::equal(std::begin(kPrefix), std::end(kPrefix), b.begin());
}

TEST(FormatAddress, Ipv6MatchesGlibcOnEveryZeroGroupPattern) {
  // Every pattern of zero and non-zero groups (2^8), with small and large non-zero values, the
  // IPv4-compatible forms included; mapped addresses are written as plain IPv4 (above).
  std::mt19937 rng(7);
  for (int pattern = 0; pattern < 256; ++pattern) {
    for (int variant = 0; variant < 20; ++variant) {
      std::array<uint8_t, 16> b{};
      for (int g = 0; g < 8; ++g) {
        if (!(pattern & (1 << g))) continue;
        const uint16_t v = variant == 0   ? 1
                           : variant == 1 ? 0xffff
                           : variant == 2 ? 0x10
                           : variant == 3 ? 0xf00
                                          : static_cast<uint16_t>(rng() % 0xffff + 1);
        b[2 * g] = static_cast<uint8_t>(v >> 8);
        b[2 * g + 1] = static_cast<uint8_t>(v);
      }
      if (is_v4_mapped(b)) continue;
      ASSERT_EQ(format_address(v6(b)), glibc_text(b)) << "pattern " << pattern;
    }
  }
}

TEST(FormatAddress, Ipv6MatchesGlibcOnRandomAddresses) {
  std::mt19937 rng(11);
  for (int i = 0; i < 100000; ++i) {
    std::array<uint8_t, 16> b{};
    for (auto& byte : b) byte = rng() % 4 == 0 ? static_cast<uint8_t>(rng()) : 0;
    if (is_v4_mapped(b)) continue;
    ASSERT_EQ(format_address(v6(b)), glibc_text(b));
  }
}

TEST(FormatAddress, Ipv6CompatibleFormsEndInDottedQuad) {
  EXPECT_EQ(format_address(v6({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1})), "::10.0.0.1");
  EXPECT_EQ(format_address(v6({0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 10, 0, 0, 1})),
            "::ffff:0:a00:1");
}

TEST(FormatAddress, Ipv4IgnoresTrailingBytes) {
  IpAddress ip = v4(10, 1, 2, 3);
  ip.bytes[4] = 0xff;
  ip.bytes[15] = 0xff;
  EXPECT_EQ(format_address(ip), "10.1.2.3");
}

TEST(FormatAddress, AppendKeepsExistingContent) {
  std::string out = "addr=";
  append_address(out, v4(1, 2, 3, 4));
  EXPECT_EQ(out, "addr=1.2.3.4");
}

TEST(ConnectErrorName, KnownErrnos) {
  EXPECT_EQ(connect_error_name(111), "ECONNREFUSED");
  EXPECT_EQ(connect_error_name(110), "ETIMEDOUT");
  EXPECT_EQ(connect_error_name(113), "EHOSTUNREACH");
  EXPECT_EQ(connect_error_name(101), "ENETUNREACH");
}

TEST(ConnectErrorName, ZeroIsConnAborted) { EXPECT_EQ(connect_error_name(0), "ECONNABORTED"); }

TEST(ConnectErrorName, UnnamedValueIsENumber) {
  EXPECT_EQ(connect_error_name(4242), "E4242");
  EXPECT_EQ(connect_error_name(-3), "E-3");
}

}  // namespace
}  // namespace netmon
