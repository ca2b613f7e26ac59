#include <gtest/gtest.h>
#include <time.h>

#include <cstdint>
#include <string>

#include "common/clock.h"

namespace netmon {
namespace {

constexpr int64_t kNsPerSec = 1'000'000'000;
constexpr int64_t kNsPerMs = 1'000'000;

TEST(Rfc3339Ms, Epoch) { EXPECT_EQ(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z"); }

TEST(Rfc3339Ms, KnownInstantWithMilliseconds) {
  const int64_t ns = 1777549411 * kNsPerSec + 910 * kNsPerMs;
  EXPECT_EQ(format_rfc3339_ms(ns), "2026-04-30T11:43:31.910Z");
}

TEST(Rfc3339Ms, LeapDayStartAndEnd) {
  EXPECT_EQ(format_rfc3339_ms(1709164800 * kNsPerSec), "2024-02-29T00:00:00.000Z");
  EXPECT_EQ(format_rfc3339_ms(1709251199 * kNsPerSec + 500 * kNsPerMs), "2024-02-29T23:59:59.500Z");
  EXPECT_EQ(format_rfc3339_ms(1709251200 * kNsPerSec), "2024-03-01T00:00:00.000Z");
}

TEST(Rfc3339Ms, LastMillisecondOfMillennium) {
  EXPECT_EQ(format_rfc3339_ms(946684799 * kNsPerSec + 999 * kNsPerMs), "1999-12-31T23:59:59.999Z");
  EXPECT_EQ(format_rfc3339_ms(946684800 * kNsPerSec), "2000-01-01T00:00:00.000Z");
}

TEST(Rfc3339Ms, TruncatesNotRounds) {
  EXPECT_EQ(format_rfc3339_ms(999'999'999), "1970-01-01T00:00:00.999Z");
  EXPECT_EQ(format_rfc3339_ms(1'999'999), "1970-01-01T00:00:00.001Z");
  EXPECT_EQ(format_rfc3339_ms(999'999), "1970-01-01T00:00:00.000Z");
}

TEST(Rfc3339Ms, BeforeEpochFloorsToEarlierMillisecond) {
  EXPECT_EQ(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
  EXPECT_EQ(format_rfc3339_ms(-kNsPerSec), "1969-12-31T23:59:59.000Z");
}

TEST(Rfc3339Ms, AppendKeepsExistingContent) {
  std::string out = "ts=";
  append_rfc3339_ms(out, 0);
  EXPECT_EQ(out, "ts=1970-01-01T00:00:00.000Z");
}

TEST(BootClock, FixedOffsetAddsBootNanoseconds) {
  const int64_t at_boot = 1777549411 * kNsPerSec;
  const BootClock clock(at_boot);
  EXPECT_EQ(clock.unix_ns_at_boot(), at_boot);
  EXPECT_EQ(clock.to_unix_ns(0), at_boot);
  EXPECT_EQ(clock.to_unix_ns(910 * kNsPerMs), at_boot + 910 * kNsPerMs);
  EXPECT_EQ(format_rfc3339_ms(clock.to_unix_ns(910 * kNsPerMs)), "2026-04-30T11:43:31.910Z");
}

TEST(BootClock, RefreshedClockMapsBootTimeNowToWallTimeNow) {
  const BootClock clock;
  timespec boot{};
  timespec wall{};
  clock_gettime(CLOCK_BOOTTIME, &boot);
  clock_gettime(CLOCK_REALTIME, &wall);
  const auto boot_ns = static_cast<uint64_t>(boot.tv_sec) * kNsPerSec + boot.tv_nsec;
  const int64_t wall_ns = int64_t{wall.tv_sec} * kNsPerSec + wall.tv_nsec;
  EXPECT_NEAR(static_cast<double>(clock.to_unix_ns(boot_ns) - wall_ns), 0.0, 1e9);
}

}  // namespace
}  // namespace netmon
