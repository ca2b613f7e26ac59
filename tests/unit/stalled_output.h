// Stalling a LineWriter's thread on a pipe nobody reads, for the unit tests of back-pressure:
// fill the pipe, hand the writer a batch and wait until its thread has taken it (queue_empties);
// the thread is then blocked in write(2), and the queue changes only when the test reads.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <thread>

#include "output/line_writer.h"

namespace netmon::test {

// Polls `done` for up to five seconds.
template <typename F>
bool eventually(F done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// Whether the writer's thread took everything queued within five seconds (a batch it took may
// still be in write(2)).
inline bool queue_empties(const LineWriter& writer) {
  return eventually([&writer] { return writer.stats().queued_bytes == 0; });
}

// Fills the pipe so that the next blocking write blocks; returns the bytes written.
inline size_t fill_pipe(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  const std::string chunk(4096, 'f');
  size_t total = 0;
  for (;;) {
    const ssize_t n = ::write(fd, chunk.data(), chunk.size());
    if (n <= 0) break;
    total += static_cast<size_t>(n);
  }
  fcntl(fd, F_SETFL, flags);
  return total;
}

// Stalls `writer`'s thread on its pipe (write end `fd`, read by nobody): fills the pipe, hands
// the writer a filler with no newline and waits until its thread took it. Returns the bytes
// fill_pipe() wrote, or 0 when a step failed.
inline size_t stall(LineWriter& writer, int fd) {
  const size_t filled = fill_pipe(fd);
  if (filled == 0) return 0;
  std::string filler = "in-flight";
  if (!writer.submit(filler, 0) || !queue_empties(writer)) return 0;
  return filled;
}

}  // namespace netmon::test
