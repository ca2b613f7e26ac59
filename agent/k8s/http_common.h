// What the kubelet client (k8s/kubelet.h) and the API server client (k8s/kube_api.h) share: the
// bearer token file, read again when it changes, and the detail of a failure fit for a log line.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "common/result.h"

namespace netmon {

// The cap on a token file: a bigger one is refused (docs/kubernetes.md).
inline constexpr size_t kMaxTokenFileBytes = 64u << 10;

// The bearer token in the text of a token file: surrounding whitespace trimmed. Fails when it
// holds a control character (a CR or LF in it would end the Authorization header and start
// another); the message names the character's offset, never the token.
Result<std::string> parse_bearer_token(std::string_view file_text);

// Refuses a bearer token over plain HTTP: fails when `plain_http` and `token_file` is not empty
// and not `allowed`, naming the `server` ("kubelet", "API server"), its `url`, the token file and
// the flag that allows it. The kubelet's and the API server's settings are checked with it.
Result<void> check_token_over_http(std::string_view server, std::string_view url, bool plain_http,
                                   std::string_view token_file, bool allowed,
                                   std::string_view allow_flag);

// `text` (a failure's detail; it may quote a server's reply) fit for a log line, /readyz and a
// stats field: control characters escaped, cut at 300 bytes.
std::string capped_detail(std::string_view text);

// A bearer token file, read again when it changes. Thread-compatible.
class TokenFile {
 public:
  explicit TokenFile(std::string path) : path_(std::move(path)) {}

  // Reads the file when its inode, size or mtime changed since the last read, or when `force`.
  // No path: nothing to read, no token. On failure (the file is gone, not a regular file within
  // kMaxTokenFileBytes, or holds no valid token) there is no token until a read succeeds: a
  // request must not go out with a token that is not all in the file now.
  Result<void> load(bool force);

  const std::string& path() const { return path_; }
  const std::string& token() const { return token_; }  // "" when none

 private:
  void clear();

  const std::string path_;
  std::string token_;
  std::string stamp_;  // inode:size:mtime of the file when last read
};

}  // namespace netmon
