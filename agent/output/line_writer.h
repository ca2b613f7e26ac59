// LineWriter: hands batches of whole JSON lines from the pipeline thread to a writer thread that
// owns the output descriptor (stdout). While the agent runs the pipeline never blocks on output:
// the queue between them is bounded in bytes. A batch that does not fit is either dropped and
// counted (submit) or handed back (offer), so that the caller may wait a bounded time for room
// (wait_for_room) and offer it again. When the agent stops, drain_until() lets submit() wait for
// room instead, up to a deadline, so that the backlog read from the kernel at the end is written,
// not dropped.
//
// Lines are counted where they are written: lines_written and lines_written_by_kind only grow
// once write(2) has taken a batch's last byte. A write error is final: the writer stops writing,
// counts every later line as dropped (output_error), and reports the error (output_error()) so
// that the agent can stop instead of running with nowhere to write.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace netmon {

// Kinds of line a caller counts separately (the pipeline's are its ConnKind values).
constexpr size_t kLineKinds = 4;

// The lines of a batch, by kind. A plain number is that many lines of kind 0.
struct LineCount {
  std::array<uint64_t, kLineKinds> by_kind{};

  LineCount() = default;
  LineCount(uint64_t lines) { by_kind[0] = lines; }  // NOLINT: implicit on purpose
  uint64_t total() const {
    uint64_t n = 0;
    for (const uint64_t k : by_kind) n += k;
    return n;
  }
};

struct OutputStats {
  uint64_t lines_written = 0;
  std::array<uint64_t, kLineKinds> lines_written_by_kind{};  // sums to lines_written
  uint64_t bytes_written = 0;
  uint64_t lines_dropped_queue_full = 0;   // the reader of the output fell behind
  uint64_t lines_dropped_write_error = 0;  // the output was closed or failed
  uint64_t queued_bytes = 0;               // waiting, not counting a batch being written
  int output_errno = 0;                    // the write error that ended the output; 0: none
};

// The kind (< kLineKinds) of one line, for the lines of a batch written only in part.
using LineKindOf = std::function<size_t(std::string_view line)>;

// When `fd` is a pipe (a container's stdout read by the runtime's log shipper), asks the kernel
// to make its buffer `bytes` long, or as long as an unprivileged process may
// (/proc/sys/fs/pipe-max-size) when that is less: the writer's batches then go in one write(2)
// each, without blocking part-way, and the reader is woken once per batch rather than per
// 64 KiB. Returns the pipe's buffer size after the attempt; 0 when `fd` is not a pipe.
size_t widen_pipe(int fd, size_t bytes);

class LineWriter {
 public:
  // `fd` stays owned by the caller and must stay open while the writer thread may write.
  // `kind_of` tells the kind of a line when a batch is written only in part (a stop whose
  // output did not drain: the lines before the cut are counted written, by kind); without it
  // such lines count as kind 0.
  LineWriter(int fd, size_t capacity_bytes, LineKindOf kind_of = {});
  // Equivalent to finish(0): whatever is still queued is counted as dropped.
  ~LineWriter();
  LineWriter(const LineWriter&) = delete;
  LineWriter& operator=(const LineWriter&) = delete;

  // Pipeline thread. Queues `batch` (`lines` whole lines) unless that would exceed the capacity,
  // in which case the batch is dropped and counted. Returns whether it was queued. Either way
  // `batch` is left empty and ready for reuse.
  bool submit(std::string& batch, const LineCount& lines);

  // Pipeline thread. Queues `batch` like submit() when it fits and returns true, leaving it
  // empty. When the output has failed for good the batch is dropped, counted as a write error,
  // and true is returned too. Only when the queue is full is false returned, with `batch` left
  // as it is, neither queued nor counted: the caller offers it again or drops it (drop()).
  bool offer(std::string& batch, const LineCount& lines);

  // Pipeline thread. Counts `lines` as dropped because the queue was full and empties `batch`.
  void drop(std::string& batch, const LineCount& lines);

  // Waits until a batch of `bytes` would fit, the output has failed, or `timeout` has passed.
  // Returns whether offer() would now take such a batch.
  bool wait_for_room(size_t bytes, std::chrono::milliseconds timeout);

  // Pipeline thread, when stopping: from now on submit() waits for room in the queue until
  // `deadline` before it drops a batch. A later call keeps the first deadline, which it returns.
  std::chrono::steady_clock::time_point drain_until(std::chrono::steady_clock::time_point deadline);

  // Waits up to `timeout` for everything queued to be written, then stops the writer thread.
  // Returns false when output was still pending (e.g. stdout blocked): the queued lines are
  // counted as dropped, and the batch being written is cut at the end of the line being written
  // (after drain_until() the writer writes at most kWriteChunkBytes at a time, each piece ending
  // at a line end; a batch it began before writes whole), for
  // which finish() waits up to kLineEndGrace more, so that stdout never ends in part of a line
  // while its reader keeps reading. When even that does not come (the reader is stuck), the
  // thread, blocked in write(2), is left to finish or to the process exit; it owns what it
  // touches, so the LineWriter may be destroyed meanwhile.
  bool finish(std::chrono::milliseconds timeout);

  static constexpr size_t kWriteChunkBytes = 64 * 1024;
  // Written batches are kept for the pipeline thread to fill again (their memory stays mapped),
  // as many as the queue's capacity leaves room for (queue and spares together never exceed it
  // by more than one batch: the agent's memory bound is the queue's); after kSpareIdle without
  // anything to write, at most kSpareBatches.
  static constexpr size_t kSpareBatches = 4;
  static constexpr std::chrono::seconds kSpareIdle{5};
  static constexpr std::chrono::milliseconds kLineEndGrace{2000};

  // Any thread.
  OutputStats stats() const;

  // Any thread. The errno of the write that failed (EPIPE: the reader of stdout is gone), or of
  // a poll of the descriptor that reported an error (check_output()); 0 while the output works.
  int output_error() const;

  // Any thread. Looks at the descriptor without writing (poll(2), no wait): a pipe whose reader
  // has gone reports POLLERR, and the output is then failed like a write that failed with EPIPE,
  // even when there was nothing to write. Returns output_error().
  int check_output();

 private:
  struct State;
  static void run(const std::shared_ptr<State>& state);

  std::shared_ptr<State> state_;
};

}  // namespace netmon
