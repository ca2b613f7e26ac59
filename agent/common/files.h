// Reading the small files the agent is given (token, CA, configuration) or finds (/proc, cgroup
// files) without trusting them: every read has a size cap, and a file that is not a regular file
// (a FIFO, a device such as /dev/zero, a socket, a directory) is refused before it is read, so
// that neither blocks nor fills memory. A symlink to a regular file is followed (Kubernetes'
// projected service-account tokens are symlinks). procfs and cgroupfs files are regular files
// whose size reads as 0 or 4096: they are read to their end, within the cap.
#pragma once

#include <cstddef>
#include <string>

#include "common/result.h"

namespace netmon {

// Opens `path` with O_RDONLY|O_CLOEXEC|O_NONBLOCK|O_NOCTTY (no wait for a FIFO's writer, no
// controlling terminal), checks with fstat that it is a regular file, and reads it whole. Fails
// with "PATH: why": the open's strerror (and its errno as the code), "not a regular file (a
// FIFO)" (or a character device, ...), or "larger than N bytes" when it holds more than
// `max_bytes` (nothing past max_bytes + 1 is read).
Result<std::string> read_regular_file(const std::string& path, std::size_t max_bytes);

// The same checks, but a file longer than `max_bytes` is not an error: its first `max_bytes`
// bytes are returned (for /proc files whose tail is not needed, e.g. a long cmdline).
Result<std::string> read_regular_file_prefix(const std::string& path, std::size_t max_bytes);

// Checks that `path` opens (as above) as a regular file of at most `max_bytes` bytes, without
// reading it: for files another library opens by name (the kubelet CA for OpenSSL).
Result<void> check_regular_file(const std::string& path, std::size_t max_bytes);

}  // namespace netmon
