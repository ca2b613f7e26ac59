#include <gtest/gtest.h>

#include <array>
#include <cstdint>
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
