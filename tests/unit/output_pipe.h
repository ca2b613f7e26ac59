// The pipe a LineWriter writes into in the unit tests of back-pressure: nobody reads it until
// read_everything() starts a thread that reads all of it into received(); close_and_join()
// closes the write end and waits for that thread. With count_lines, for what arrived.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <thread>

#include "common/unique_fd.h"

namespace netmon::test {

inline size_t count_lines(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

class OutputPipe {
 public:
  OutputPipe() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) == 0) {
      read_end_ = UniqueFd(fds[0]);
      write_end_ = UniqueFd(fds[1]);
    }
  }
  ~OutputPipe() {
    if (reader_.joinable()) close_and_join();
  }
  OutputPipe(const OutputPipe&) = delete;
  OutputPipe& operator=(const OutputPipe&) = delete;

  bool ok() const { return read_end_.valid() && write_end_.valid(); }
  int read_fd() const { return read_end_.get(); }
  int write_fd() const { return write_end_.get(); }

  // Starts the thread that reads the pipe until its write end closes.
  void read_everything() {
    reader_ = std::thread([this] {
      char buf[65536];
      for (;;) {
        const ssize_t n = ::read(read_end_.get(), buf, sizeof(buf));
        if (n <= 0) break;
        received_.append(buf, static_cast<size_t>(n));
      }
    });
  }
  bool reading() const { return reader_.joinable(); }

  // Once read_everything() runs (and the writer is done with the pipe).
  void close_and_join() {
    write_end_.reset();
    reader_.join();
  }

  // What the reader got; read it after close_and_join().
  const std::string& received() const { return received_; }

 private:
  UniqueFd read_end_, write_end_;
  std::thread reader_;
  std::string received_;
};

}  // namespace netmon::test
