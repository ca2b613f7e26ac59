#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <ctime>
#include <string>

namespace netmon::log {
namespace {

std::atomic<Level> g_level{Level::kInfo};

const char* level_name(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "?";
}

}  // namespace

void set_level(Level level) { g_level.store(level, std::memory_order_relaxed); }

Level level() { return g_level.load(std::memory_order_relaxed); }

bool enabled(Level l) { return static_cast<int>(l) >= static_cast<int>(level()); }

std::optional<Level> parse_level(std::string_view text) {
  if (text == "debug") return Level::kDebug;
  if (text == "info") return Level::kInfo;
  if (text == "warn" || text == "warning") return Level::kWarn;
  if (text == "error") return Level::kError;
  return std::nullopt;
}

void write(Level l, std::string_view message) {
  if (!enabled(l)) return;
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  tm utc{};
  gmtime_r(&now.tv_sec, &utc);
  char stamp[32];
  strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
  std::string line;
  line.reserve(message.size() + 48);
  line += stamp;
  char millis[24];
  snprintf(millis, sizeof(millis), ".%03ldZ", now.tv_nsec / 1000000);
  line += millis;
  line += " netmon ";
  line += level_name(l);
  line += ": ";
  line += message;
  line += '\n';
  // One write per line keeps lines whole when threads log concurrently.
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace netmon::log
