// LineWriter: hands batches of whole JSON lines from the pipeline thread to a writer thread that
// owns the output descriptor (stdout). The pipeline never blocks on output: the queue between
// them is bounded in bytes, and a batch that does not fit is dropped and counted.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

namespace netmon {

struct OutputStats {
  uint64_t lines_written = 0;
  uint64_t bytes_written = 0;
  uint64_t lines_dropped_queue_full = 0;   // the reader of the output fell behind
  uint64_t lines_dropped_write_error = 0;  // the output was closed or failed
  uint64_t queued_bytes = 0;
};

class LineWriter {
 public:
  // `fd` stays owned by the caller and must outlive the writer.
  LineWriter(int fd, size_t capacity_bytes);
  ~LineWriter();
  LineWriter(const LineWriter&) = delete;
  LineWriter& operator=(const LineWriter&) = delete;

  // Pipeline thread. Queues `batch` (`lines` whole lines) unless that would exceed the capacity,
  // in which case the batch is dropped and counted. Returns whether it was queued. Clears `batch`
  // and keeps its allocation for reuse when it was dropped.
  bool submit(std::string& batch, uint64_t lines);

  // Waits up to `timeout` for everything queued to be written, then stops the writer thread.
  // Returns false when output was still pending (e.g. stdout blocked); that data is counted as
  // dropped and the blocked thread is left behind for the process exit to end.
  bool finish(std::chrono::milliseconds timeout);

  // Any thread.
  OutputStats stats() const;

 private:
  struct Batch {
    std::string data;
    uint64_t lines = 0;
  };
  void run();
  bool write_all(const std::string& data);

  const int fd_;
  const size_t capacity_bytes_;
  mutable std::mutex mutex_;
  std::condition_variable wake_writer_;
  std::condition_variable drained_;
  std::deque<Batch> queue_;
  size_t queued_bytes_ = 0;
  uint64_t queued_lines_ = 0;
  bool writing_ = false;
  bool stopping_ = false;
  bool output_failed_ = false;
  std::atomic<uint64_t> lines_written_{0};
  std::atomic<uint64_t> bytes_written_{0};
  std::atomic<uint64_t> dropped_full_{0};
  std::atomic<uint64_t> dropped_error_{0};
  std::thread thread_;
};

}  // namespace netmon
