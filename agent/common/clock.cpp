#include "common/clock.h"

#include <time.h>

#include <algorithm>
#include <climits>
#include <cstring>

namespace netmon {
namespace {

int64_t read_ns(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days).
void civil_from_days(int64_t z, int64_t& y, unsigned& m, unsigned& d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  y = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y += (m <= 2);
}

void append_digits(std::string& out, int64_t value, int width) {
  char buf[20];
  for (int i = width - 1; i >= 0; --i) {
    buf[i] = static_cast<char>('0' + value % 10);
    value /= 10;
  }
  out.append(buf, static_cast<size_t>(width));
}

}  // namespace

void BootClock::refresh() {
  // Read the boot clock on both sides of the wall clock and take the midpoint, so a preemption
  // between the reads shifts the offset by at most half the gap.
  const int64_t boot_before = read_ns(CLOCK_BOOTTIME);
  const int64_t wall = read_ns(CLOCK_REALTIME);
  const int64_t boot_after = read_ns(CLOCK_BOOTTIME);
  offset_ns_ = wall - (boot_before + (boot_after - boot_before) / 2);
}

void append_rfc3339_ms(std::string& out, int64_t unix_ns) {
  constexpr int64_t kNsPerSec = 1'000'000'000;
  int64_t secs = unix_ns / kNsPerSec;
  int64_t rem = unix_ns % kNsPerSec;
  if (rem < 0) {
    rem += kNsPerSec;
    --secs;
  }
  // Events come in bursts within the same second: reuse its "YYYY-MM-DDTHH:MM:SS" text.
  thread_local int64_t cached_secs = INT64_MIN;
  thread_local char cached[32];
  thread_local size_t cached_len = 0;
  if (secs == cached_secs) {
    out.append(cached, cached_len);
    out += '.';
    append_digits(out, rem / 1'000'000, 3);
    out += 'Z';
    return;
  }
  const size_t start = out.size();
  int64_t days = secs / 86400;
  int64_t sod = secs % 86400;
  if (sod < 0) {
    sod += 86400;
    --days;
  }
  int64_t year = 0;
  unsigned month = 0;
  unsigned day = 0;
  civil_from_days(days, year, month, day);
  append_digits(out, year, 4);
  out += '-';
  append_digits(out, month, 2);
  out += '-';
  append_digits(out, day, 2);
  out += 'T';
  append_digits(out, sod / 3600, 2);
  out += ':';
  append_digits(out, sod / 60 % 60, 2);
  out += ':';
  append_digits(out, sod % 60, 2);
  cached_len = std::min(out.size() - start, sizeof(cached));
  std::memcpy(cached, out.data() + start, cached_len);
  cached_secs = secs;
  out += '.';
  append_digits(out, rem / 1'000'000, 3);
  out += 'Z';
}

std::string format_rfc3339_ms(int64_t unix_ns) {
  std::string out;
  append_rfc3339_ms(out, unix_ns);
  return out;
}

}  // namespace netmon
