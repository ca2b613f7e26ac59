#include "output/line_writer.h"

#include <unistd.h>

#include <cerrno>

#include "common/log.h"

namespace netmon {

LineWriter::LineWriter(int fd, size_t capacity_bytes)
    : fd_(fd), capacity_bytes_(capacity_bytes), thread_([this] { run(); }) {}

LineWriter::~LineWriter() { finish(std::chrono::milliseconds(0)); }

bool LineWriter::submit(std::string& batch, uint64_t lines) {
  if (batch.empty()) return true;
  bool failed = false;
  {
    std::lock_guard lock(mutex_);
    failed = output_failed_;
    if (!stopping_ && !output_failed_ && queued_bytes_ + batch.size() <= capacity_bytes_) {
      queued_bytes_ += batch.size();
      queued_lines_ += lines;
      queue_.push_back(Batch{std::move(batch), lines});
      batch = std::string();
      batch.reserve(queue_.back().data.capacity());
      wake_writer_.notify_one();
      return true;
    }
  }
  (failed ? dropped_error_ : dropped_full_).fetch_add(lines, std::memory_order_relaxed);
  batch.clear();
  return false;
}

bool LineWriter::write_all(const std::string& data) {
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return true;
}

void LineWriter::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_writer_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) break;  // stopping and drained
    Batch batch = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    const bool failed = output_failed_;
    lock.unlock();
    const bool ok = !failed && write_all(batch.data);
    lock.lock();
    writing_ = false;
    queued_bytes_ -= batch.data.size();
    queued_lines_ -= batch.lines;
    if (ok) {
      lines_written_.fetch_add(batch.lines, std::memory_order_relaxed);
      bytes_written_.fetch_add(batch.data.size(), std::memory_order_relaxed);
    } else {
      if (!output_failed_) {
        log::error("writing events to the output failed; further events are dropped and counted");
      }
      output_failed_ = true;
      dropped_error_.fetch_add(batch.lines, std::memory_order_relaxed);
    }
    if (queue_.empty()) drained_.notify_all();
  }
  drained_.notify_all();
}

bool LineWriter::finish(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!thread_.joinable()) return true;
  const bool drained =
      drained_.wait_for(lock, timeout, [this] { return queue_.empty() && !writing_; });
  stopping_ = true;
  wake_writer_.notify_one();
  if (!drained) {
    // The output is blocked: count what cannot be written and leave the writer thread, stuck in
    // write(2), to the process exit.
    dropped_full_.fetch_add(queued_lines_, std::memory_order_relaxed);
    queue_.clear();
    lock.unlock();
    thread_.detach();
    return false;
  }
  lock.unlock();
  thread_.join();
  return true;
}

OutputStats LineWriter::stats() const {
  OutputStats s;
  s.lines_written = lines_written_.load(std::memory_order_relaxed);
  s.bytes_written = bytes_written_.load(std::memory_order_relaxed);
  s.lines_dropped_queue_full = dropped_full_.load(std::memory_order_relaxed);
  s.lines_dropped_write_error = dropped_error_.load(std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  s.queued_bytes = queued_bytes_;
  return s;
}

}  // namespace netmon
