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

std::vector<std::string_view> split_list(std::string_view csv) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos <= csv.size()) {
    size_t comma = csv.find(',', pos);
    if (comma == std::string_view::npos) comma = csv.size();
    std::string_view item = csv.substr(pos, comma - pos);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) out.push_back(item);
    pos = comma + 1;
  }
  return out;
}

}  // namespace netmon
