// Text helpers for messages that quote input: configuration values, URLs, file names.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace netmon {

// `text` in single quotes, fit for one log line whatever the input: bytes below 0x20, DEL and
// backslash are written as \xNN (so a CR/LF in a value cannot start a new log line), and input
// longer than `max_bytes` is cut to its first `max_bytes` bytes followed by "...' (N bytes)".
std::string quoted(std::string_view text, std::size_t max_bytes = 120);

}  // namespace netmon
