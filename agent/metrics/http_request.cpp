#include "metrics/http_request.h"

namespace netmon {
namespace {

bool is_token_char(char c) {
  // RFC 9110 tchar, enough for methods.
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '!' || c == '~' || c == '*' || c == '+' || c == '\'' ||
         c == '#' || c == '$' || c == '%' || c == '&' || c == '^' || c == '`' || c == '|';
}

bool is_target_char(char c) {
  const auto byte = static_cast<unsigned char>(c);
  return byte > 0x20 && byte < 0x7f;
}

}  // namespace

HttpRequestHead parse_request_head(std::string_view received) {
  HttpRequestHead head;
  // The header section ends with an empty line; bare LF line ends are tolerated (RFC 9112 2.2).
  size_t end = received.find("\r\n\r\n");
  const size_t lf_end = received.find("\n\n");
  if (lf_end != std::string_view::npos && (end == std::string_view::npos || lf_end < end)) {
    end = lf_end;
  }
  const size_t line_end = received.find('\n');
  if (end == std::string_view::npos || end > kMaxRequestHeadBytes) {
    if (received.size() > kMaxRequestHeadBytes) {
      head.state = HttpRequestHead::State::kTooLarge;
    }
    // A request line that cannot be HTTP is refused before the rest arrives.
    const std::string_view start = received.substr(0, line_end);
    for (size_t i = 0; i < start.size() && start[i] != ' '; ++i) {
      if (!is_token_char(start[i])) head.state = HttpRequestHead::State::kBad;
    }
    return head;
  }

  std::string_view line = received.substr(0, line_end);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == 0 || sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != line.npos) {
    head.state = HttpRequestHead::State::kBad;
    return head;
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  bool ok =
      !target.empty() && target.front() == '/' && (version == "HTTP/1.1" || version == "HTTP/1.0");
  for (const char c : method) ok = ok && is_token_char(c);
  for (const char c : target) ok = ok && is_target_char(c);
  if (!ok) {
    head.state = HttpRequestHead::State::kBad;
    return head;
  }
  head.state = HttpRequestHead::State::kComplete;
  head.method = method;
  head.path = target.substr(0, target.find('?'));
  return head;
}

}  // namespace netmon
