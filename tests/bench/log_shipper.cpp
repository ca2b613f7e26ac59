// netmon-log-shipper: what a container runtime's shim does with a container's stdout, for the
// storm bench's pipe output (storm_runner.py --outputs pipe). It reads its stdin (the agent's
// stdout, a pipe) and writes every line to FILE in the CRI log format, as containerd's CRI logger
// does: "<RFC 3339 time with nanoseconds> stdout F <line>\n", one write() per line, a line longer
// than 16 KiB split into 16 KiB pieces tagged P (partial) before the last one, tagged F. Ends at
// end-of-file on stdin (the agent exited) after writing what it read, or on a write error.
//
//   netmon-log-shipper FILE
//
// Prints on stderr at the end: "netmon-log-shipper: lines N, writes N, bytes N".

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

namespace {

constexpr size_t kReadSize = 64 * 1024;  // containerd's reader buffer is bufio's 64 KiB too
constexpr size_t kMaxLine = 16 * 1024;   // containerd's default max_container_log_line_size
constexpr size_t kMaxPending = 1 << 20;  // bound on an unterminated line held between reads

struct Counts {
  uint64_t lines = 0;
  uint64_t writes = 0;
  uint64_t bytes = 0;
};

// "2026-12-07T01:02:03.123456789Z", UTC, as Go's time.RFC3339Nano with fixed nanoseconds.
void timestamp(std::string& out) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  char buf[40];
  const int n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ",
                              t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min,
                              t.tm_sec, static_cast<long>(ts.tv_nsec));
  out.append(buf, static_cast<size_t>(n));
}

bool write_all(int fd, const std::string& s, Counts& c) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
    ++c.writes;
  }
  c.bytes += s.size();
  return true;
}

// One CRI record per kMaxLine piece of `line` (without its newline).
bool ship(int fd, std::string_view line, bool complete, std::string& record, Counts& c) {
  do {
    const std::string_view piece = line.substr(0, kMaxLine);
    line.remove_prefix(piece.size());
    const bool last = line.empty() && complete;
    record.clear();
    timestamp(record);
    record += last ? " stdout F " : " stdout P ";
    record.append(piece);
    record += '\n';
    if (!write_all(fd, record, c)) return false;
  } while (!line.empty());
  if (complete) ++c.lines;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: netmon-log-shipper FILE  (stdin -> FILE, CRI log format)\n");
    return 2;
  }
  const int fd = ::open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::fprintf(stderr, "netmon-log-shipper: %s: %s\n", argv[1], std::strerror(errno));
    return 1;
  }
  Counts c;
  std::string pending;  // the start of a line whose newline has not come yet
  std::string record;
  char buf[kReadSize];
  int rc = 0;
  for (;;) {
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::fprintf(stderr, "netmon-log-shipper: read: %s\n", std::strerror(errno));
      rc = 1;
      break;
    }
    if (n == 0) break;
    std::string_view in(buf, static_cast<size_t>(n));
    bool ok = true;
    for (size_t nl; ok && (nl = in.find('\n')) != std::string_view::npos;) {
      if (pending.empty()) {
        ok = ship(fd, in.substr(0, nl), true, record, c);
      } else {
        pending.append(in.substr(0, nl));
        ok = ship(fd, pending, true, record, c);
        pending.clear();
      }
      in.remove_prefix(nl + 1);
    }
    pending.append(in);
    // A line longer than the bound goes out in partial records, as containerd's does.
    if (ok && pending.size() > kMaxPending) {
      ok = ship(fd, pending, false, record, c);
      pending.clear();
    }
    if (!ok) {
      std::fprintf(stderr, "netmon-log-shipper: write: %s\n", std::strerror(errno));
      rc = 1;
      break;
    }
  }
  if (rc == 0 && !pending.empty() && !ship(fd, pending, false, record, c)) rc = 1;
  ::close(fd);
  std::fprintf(stderr, "netmon-log-shipper: lines %llu, writes %llu, bytes %llu\n",
               static_cast<unsigned long long>(c.lines), static_cast<unsigned long long>(c.writes),
               static_cast<unsigned long long>(c.bytes));
  return rc;
}
