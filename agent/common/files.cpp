#include "common/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "common/unique_fd.h"

namespace netmon {
namespace {

// " (a FIFO)" and the like: what a file that is not a regular file is instead.
std::string file_type(mode_t mode) {
  if (S_ISFIFO(mode)) return " (a FIFO)";
  if (S_ISCHR(mode)) return " (a character device)";
  if (S_ISBLK(mode)) return " (a block device)";
  if (S_ISSOCK(mode)) return " (a socket)";
  return "";
}

// The open descriptor of a regular file, and its size as fstat reports it (0 for most of procfs).
struct Opened {
  UniqueFd fd;
  off_t size = 0;
};

Result<Opened> open_regular(const std::string& path) {
  // O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer (and
  // the fstat below refuses it); on a regular file the flag changes nothing.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd.valid()) {
    const int err = errno;
    return fail(path + ": " + std::strerror(err), err);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    const int err = errno;
    return fail(path + ": " + std::strerror(err), err);
  }
  if (S_ISDIR(st.st_mode)) return fail(path + ": " + std::strerror(EISDIR), EISDIR);
  if (!S_ISREG(st.st_mode)) {
    return fail(path + ": not a regular file" + file_type(st.st_mode), EINVAL);
  }
  return Opened{std::move(fd), st.st_size};
}

std::string too_large(const std::string& path, std::size_t max_bytes) {
  return path + ": larger than " + std::to_string(max_bytes) + " bytes";
}

// Reads up to max_bytes + 1 bytes (one more than allowed tells a file at the cap from a longer
// one).
Result<std::string> read_capped(const std::string& path, std::size_t max_bytes, bool truncate) {
  auto opened = open_regular(path);
  if (!opened) return tl::unexpected(opened.error());
  if (!truncate && opened->size > 0 && static_cast<uint64_t>(opened->size) > max_bytes) {
    return fail(too_large(path, max_bytes), EFBIG);
  }
  std::string out;
  const std::size_t want = max_bytes + 1;
  char buffer[16384];
  while (out.size() < want) {
    const std::size_t chunk = std::min(sizeof(buffer), want - out.size());
    const ssize_t n = ::read(opened->fd.get(), buffer, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      return fail(path + ": " + std::strerror(err), err);
    }
    if (n == 0) break;
    out.append(buffer, static_cast<std::size_t>(n));
  }
  if (out.size() > max_bytes) {
    if (!truncate) return fail(too_large(path, max_bytes), EFBIG);
    out.resize(max_bytes);
  }
  return out;
}

}  // namespace

Result<std::string> read_regular_file(const std::string& path, std::size_t max_bytes) {
  return read_capped(path, max_bytes, false);
}

Result<std::string> read_regular_file_prefix(const std::string& path, std::size_t max_bytes) {
  return read_capped(path, max_bytes, true);
}

Result<void> check_regular_file(const std::string& path, std::size_t max_bytes) {
  auto opened = open_regular(path);
  if (!opened) return tl::unexpected(opened.error());
  if (opened->size > 0 && static_cast<uint64_t>(opened->size) > max_bytes) {
    return fail(too_large(path, max_bytes), EFBIG);
  }
  return {};
}

}  // namespace netmon
