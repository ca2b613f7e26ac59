// Text helpers for messages that quote input: configuration values, URLs, file names.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace netmon {

// `text` in single quotes, fit for one log line whatever the input: bytes below 0x20, DEL and
// backslash are written as \xNN (so a CR/LF in a value cannot start a new log line), and input
// longer than `max_bytes` is cut to its first `max_bytes` bytes followed by "...' (N bytes)".
std::string quoted(std::string_view text, std::size_t max_bytes = 120);

// The items of a comma-separated list ("a, b,c" -> a, b, c), each without its surrounding
// spaces; empty items are left out ("" -> none). The views point into `csv`.
std::vector<std::string_view> split_list(std::string_view csv);

}  // namespace netmon
