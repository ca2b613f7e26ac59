// Logging to stderr, one line per message. stdout is reserved for events.
// Thread-safe: each message is a single write(2) of a whole line.
#pragma once

#include <optional>
#include <string_view>

namespace netmon::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Sets the lowest level written; the default is kInfo.
void set_level(Level level);
Level level();
bool enabled(Level level);

// Parses "debug", "info", "warn" or "error".
std::optional<Level> parse_level(std::string_view text);

void write(Level level, std::string_view message);

inline void debug(std::string_view m) { write(Level::kDebug, m); }
inline void info(std::string_view m) { write(Level::kInfo, m); }
inline void warn(std::string_view m) { write(Level::kWarn, m); }
inline void error(std::string_view m) { write(Level::kError, m); }

}  // namespace netmon::log
