#include "k8s/http_common.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "common/files.h"
#include "common/text.h"

namespace netmon {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

}  // namespace

Result<std::string> parse_bearer_token(std::string_view text) {
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  for (size_t i = 0; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x20 || byte == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      const std::string hex = {'0', 'x', kHex[byte >> 4], kHex[byte & 0xf]};
      return fail("the token holds the control character " + hex + " at offset " +
                  std::to_string(i) + " (a token is one line of printable characters)");
    }
  }
  return std::string(text);
}

Result<void> check_token_over_http(std::string_view server, std::string_view url, bool plain_http,
                                   std::string_view token_file, bool allowed,
                                   std::string_view allow_flag) {
  if (!plain_http || token_file.empty() || allowed) return {};
  return fail("the " + std::string(server) + " URL " + quoted(url) +
              " is plain HTTP and would carry the bearer token of " + quoted(token_file) +
              " in cleartext; use https, or allow it with " + std::string(allow_flag));
}

std::string capped_detail(std::string_view text) {
  constexpr size_t kMaxDetailBytes = 300;
  std::string out = quoted(text, kMaxDetailBytes);
  // quoted() wraps the text in single quotes: "'text'" or "'text...' (N bytes)".
  const size_t close = out.rfind('\'');
  return out.substr(1, close - 1) + out.substr(close + 1);
}

void TokenFile::clear() {
  token_.clear();
  stamp_.clear();
}

Result<void> TokenFile::load(bool force) {
  if (path_.empty()) return {};
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    const int err = errno;
    clear();
    return fail(path_ + ": " + std::strerror(err), err);
  }
  // Projected service-account tokens are replaced (atomically, via a symlink swap) before they
  // expire: a new inode, size or mtime means a new token.
  const std::string stamp = std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
                            std::to_string(st.st_mtim.tv_sec) + "." +
                            std::to_string(st.st_mtim.tv_nsec);
  if (!force && stamp == stamp_) return {};
  // Never a token that is not all in a regular file within the cap, nor one that could break
  // the request's headers: the request goes out without it (and fails) instead.
  clear();
  auto text = read_regular_file(path_, kMaxTokenFileBytes);
  if (!text) return tl::unexpected(text.error());
  auto token = parse_bearer_token(*text);
  if (!token) return fail(path_ + ": " + token.error().message);
  token_ = std::move(*token);
  stamp_ = stamp;
  return {};
}

}  // namespace netmon
