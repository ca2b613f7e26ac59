#include "common/text.h"

namespace netmon {

std::string quoted(std::string_view text, std::size_t max_bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  const std::string_view shown = text.substr(0, max_bytes);
  std::string out;
  out.reserve(shown.size() + 24);
  out += '\'';
  for (const char c : shown) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f || c == '\\') {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    } else {
      out += c;
    }
  }
  if (shown.size() < text.size()) {
    out += "...' (";
    out += std::to_string(text.size());
    out += " bytes)";
  } else {
    out += '\'';
  }
  return out;
}

}  // namespace netmon
