#include "output/line_writer.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "common/files.h"

namespace netmon {

size_t widen_pipe(int fd, size_t bytes) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) return 0;
  if (auto max = read_regular_file("/proc/sys/fs/pipe-max-size", 32)) {
    const size_t limit = std::strtoull(max->c_str(), nullptr, 10);
    if (limit > 0 && limit < bytes) bytes = limit;
  }
  const int now = ::fcntl(fd, F_GETPIPE_SZ);
  if (now >= 0 && static_cast<size_t>(now) >= bytes) return static_cast<size_t>(now);
  // Fails with EPERM past pipe-max-size without CAP_SYS_RESOURCE, or past the user's pipe
  // quota (fs.pipe-user-pages-soft): the pipe stays as it was.
  const int set = ::fcntl(fd, F_SETPIPE_SZ, static_cast<int>(bytes));
  if (set > 0) return static_cast<size_t>(set);
  return now > 0 ? static_cast<size_t>(now) : 0;
}

// Shared by the LineWriter and its thread, so a detached thread never outlives what it uses.
struct LineWriter::State {
  struct Batch {
    std::string data;
    LineCount lines;
  };

  State(int fd_in, size_t capacity, LineKindOf kind_of_in)
      : fd(fd_in), capacity_bytes(capacity), kind_of(std::move(kind_of_in)) {}

  // With `mutex` held. A batch bigger than the whole queue still goes when the queue is empty:
  // the bound limits what waits, and dropping it would lose everything a busy poll round made.
  bool fits(size_t bytes) const {
    return queued_bytes == 0 || queued_bytes + bytes <= capacity_bytes;
  }

  // What became of a batch offered to the queue.
  enum class Push { kQueued, kFull, kFailed, kStopped };

  // With `mutex` held: queues `batch` when the output works and it fits, leaving it empty, with
  // its capacity, for reuse. Otherwise leaves it as it is and says why not.
  Push try_push(std::string& batch, const LineCount& lines) {
    if (output_failed) return Push::kFailed;
    if (stopping) return Push::kStopped;
    if (!fits(batch.size())) return Push::kFull;
    const size_t capacity = batch.capacity();
    queued_bytes += batch.size();
    queued_lines += lines.total();
    queue.push_back(Batch{std::move(batch), lines});
    wake_writer.notify_one();
    if (!spares.empty()) {
      batch = std::move(spares.back());
      spares.pop_back();
      spare_bytes -= batch.capacity();
    } else {
      batch = std::string();
      batch.reserve(capacity);
    }
    return Push::kQueued;
  }

  // Counts a batch of `lines` that was not queued for `why` as dropped, and empties it: a write
  // error once the output failed, else a full queue.
  void drop(Push why, std::string& batch, const LineCount& lines) {
    (why == Push::kFailed ? dropped_error : dropped_full)
        .fetch_add(lines.total(), std::memory_order_relaxed);
    batch.clear();
  }

  // Writes `data` (whole lines): in one write(2) while the agent runs (fewer, larger writes keep
  // up with a disk file: 64 KiB pieces made the writer fall behind a sustained storm and drop
  // 5 % of the lines), and once stopping in pieces of at most kWriteChunkBytes that each end at a
  // line end, stopping after a piece once `cut` is set. Returns 0, or the errno of the write
  // that failed; `written` is how much was written (all of `data` unless cut or failed).
  int write_lines(const std::string& data, size_t& written) const {
    written = 0;
    while (written < data.size()) {
      if (cut.load(std::memory_order_relaxed)) return 0;
      const size_t piece = stopping_writes.load(std::memory_order_relaxed)
                               ? LineWriter::kWriteChunkBytes
                               : data.size();
      size_t end = std::min(data.size(), written + piece);
      if (end < data.size()) {
        // The last line end within the piece, or, for a line longer than a piece, its own end.
        size_t newline = data.rfind('\n', end - 1);
        if (newline == std::string::npos || newline < written) newline = data.find('\n', end);
        end = newline == std::string::npos ? data.size() : newline + 1;
      }
      if (const int error = write_all(data.data() + written, end - written); error != 0) {
        return error;
      }
      written = end;
    }
    return 0;
  }

  // Returns 0, or the errno of the write that failed.
  int write_all(const char* p, size_t left) const {
    while (left > 0) {
      const ssize_t n = ::write(fd, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          // A non-blocking stdout (its file description may be shared with a process that set
          // O_NONBLOCK): wait until it takes more, as a blocking write would.
          pollfd pfd{fd, POLLOUT, 0};
          if (::poll(&pfd, 1, -1) < 0 && errno != EINTR) return errno;
          continue;
        }
        return errno != 0 ? errno : EIO;
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    return 0;
  }

  const int fd;
  const size_t capacity_bytes;
  const LineKindOf kind_of;
  std::atomic<bool> stopping_writes{false};  // drain_until() was called: write in pieces
  std::atomic<bool> cut{false};              // finish() gave up waiting: stop at a line end
  std::mutex mutex;
  std::condition_variable wake_writer;
  std::condition_variable drained;
  std::condition_variable room;  // the writer took a batch from the queue
  std::deque<Batch> queue;       // guarded by mutex
  // Written batches kept for reuse (guarded by mutex): their memory is already mapped and
  // touched. A fresh batch is a fresh mapping (the agent fixes glibc's mmap threshold below the
  // batch size) whose every page faults once when it is filled, and whose release unmaps it
  // again: under a sustained storm that was 1.6 us of the polling thread's system time per
  // 3.6 KB event, more than the formatting. What the queue held at its fullest stays as spares,
  // so spares and queue together stay within the queue's capacity plus one batch (besides a batch
  // being filled); after kSpareIdle without a batch to write, all but kSpareBatches go back.
  std::vector<std::string> spares;
  size_t spare_bytes = 0;  // the capacities of `spares`

  // With `mutex` held: keeps `data`, the batch just written, as a spare unless the queue and the
  // spares fill the capacity already, else frees it; the queue and the spares then stay within
  // the capacity plus one batch. Under a sustained backlog the polling thread refills the queue
  // while a batch is written, so the queue is full whenever a batch comes back: a spare is then
  // exactly what the next batch needs (without one, every new batch is a fresh mapping, 64 page
  // faults and zeroed pages each).
  void keep_spare(std::string&& data) {
    if (queued_bytes + spare_bytes > capacity_bytes) {
      return;  // freed by the caller's destructor
    }
    data.clear();
    spare_bytes += data.capacity();
    spares.push_back(std::move(data));
  }

  // With `mutex` held: hands out all but kSpareBatches spares, for the caller to free outside
  // the lock.
  std::vector<std::string> trim_spares() {
    std::vector<std::string> extra;
    while (spares.size() > LineWriter::kSpareBatches) {
      spare_bytes -= spares.back().capacity();
      extra.push_back(std::move(spares.back()));
      spares.pop_back();
    }
    return extra;
  }
  size_t queued_bytes = 0;    // of `queue`
  uint64_t queued_lines = 0;  // of `queue`
  bool writing = false;       // a batch popped from the queue is being written
  bool stopping = false;
  bool output_failed = false;
  std::atomic<int> output_errno{0};
  bool draining = false;  // submit() waits for room until drain_deadline
  std::chrono::steady_clock::time_point drain_deadline;
  std::thread thread;
  std::atomic<uint64_t> lines_written{0};
  std::array<std::atomic<uint64_t>, kLineKinds> lines_written_by_kind{};
  std::atomic<uint64_t> bytes_written{0};
  std::atomic<uint64_t> dropped_full{0};
  std::atomic<uint64_t> dropped_error{0};
};

LineWriter::LineWriter(int fd, size_t capacity_bytes, LineKindOf kind_of)
    : state_(std::make_shared<State>(fd, capacity_bytes, std::move(kind_of))) {
  state_->thread = std::thread(&LineWriter::run, state_);
}

LineWriter::~LineWriter() { finish(std::chrono::milliseconds(0)); }

bool LineWriter::submit(std::string& batch, const LineCount& lines) {
  if (batch.empty()) return true;
  State& s = *state_;
  State::Push result;
  {
    std::unique_lock lock(s.mutex);
    if (s.draining && !s.fits(batch.size())) {
      s.room.wait_until(lock, s.drain_deadline, [&s, &batch] {
        return s.fits(batch.size()) || s.output_failed || s.stopping;
      });
    }
    result = s.try_push(batch, lines);
  }
  if (result == State::Push::kQueued) return true;
  s.drop(result, batch, lines);
  return false;
}

bool LineWriter::offer(std::string& batch, const LineCount& lines) {
  if (batch.empty()) return true;
  State& s = *state_;
  State::Push result;
  {
    std::lock_guard lock(s.mutex);
    result = s.try_push(batch, lines);
  }
  if (result == State::Push::kFull) return false;
  if (result != State::Push::kQueued) s.drop(result, batch, lines);
  return true;
}

void LineWriter::drop(std::string& batch, const LineCount& lines) {
  state_->drop(State::Push::kFull, batch, lines);
}

bool LineWriter::wait_for_room(size_t bytes, std::chrono::milliseconds timeout) {
  State& s = *state_;
  std::unique_lock lock(s.mutex);
  return s.room.wait_for(lock, timeout,
                         [&s, bytes] { return s.fits(bytes) || s.output_failed || s.stopping; });
}

std::chrono::steady_clock::time_point LineWriter::drain_until(
    std::chrono::steady_clock::time_point deadline) {
  std::lock_guard lock(state_->mutex);
  if (!state_->draining) {
    state_->draining = true;
    state_->drain_deadline = deadline;
    state_->stopping_writes.store(true, std::memory_order_relaxed);
  }
  return state_->drain_deadline;
}

void LineWriter::run(const std::shared_ptr<State>& state) {
  State& s = *state;
  std::unique_lock lock(s.mutex);
  for (;;) {
    const auto ready = [&s] { return s.stopping || !s.queue.empty(); };
    if (!s.wake_writer.wait_for(lock, kSpareIdle, ready)) {
      std::vector<std::string> extra = s.trim_spares();
      if (!extra.empty()) {
        lock.unlock();
        extra.clear();  // freed outside the lock
        lock.lock();
      }
      continue;
    }
    if (s.queue.empty()) break;  // stopping and drained
    State::Batch batch = std::move(s.queue.front());
    s.queue.pop_front();
    s.queued_bytes -= batch.data.size();
    s.queued_lines -= batch.lines.total();
    s.writing = true;
    s.room.notify_all();
    const bool failed = s.output_failed;
    lock.unlock();
    size_t written = 0;
    const int error = failed ? 0 : s.write_lines(batch.data, written);
    if (!failed && error == 0 && written < batch.data.size()) {
      // Cut at a line end by finish(): the lines before the cut were written, the rest dropped.
      LineCount done;
      for (size_t start = 0; start < written;) {
        const size_t end = batch.data.find('\n', start);
        const std::string_view line(batch.data.data() + start, end - start);
        ++done.by_kind[s.kind_of ? std::min(s.kind_of(line), kLineKinds - 1) : 0];
        start = end + 1;
      }
      for (size_t k = 0; k < kLineKinds; ++k) batch.lines.by_kind[k] -= done.by_kind[k];
      s.dropped_full.fetch_add(batch.lines.total(), std::memory_order_relaxed);
      batch.lines = done;
      batch.data.resize(written);
    }
    lock.lock();
    s.writing = false;
    if (!failed && error == 0) {
      // Counted once written, under `mutex`: stats() reads the counts together.
      for (size_t k = 0; k < kLineKinds; ++k) {
        s.lines_written_by_kind[k].fetch_add(batch.lines.by_kind[k], std::memory_order_relaxed);
      }
      s.lines_written.fetch_add(batch.lines.total(), std::memory_order_relaxed);
      s.bytes_written.fetch_add(batch.data.size(), std::memory_order_relaxed);
    } else {
      // The caller (the agent) reports the error once: output_error().
      if (!s.output_failed) s.output_errno.store(error, std::memory_order_relaxed);
      s.output_failed = true;
      s.dropped_error.fetch_add(batch.lines.total(), std::memory_order_relaxed);
      s.room.notify_all();
    }
    s.keep_spare(std::move(batch.data));
    if (s.queue.empty()) s.drained.notify_all();
  }
  s.drained.notify_all();
}

bool LineWriter::finish(std::chrono::milliseconds timeout) {
  State& s = *state_;
  std::unique_lock lock(s.mutex);
  if (!s.thread.joinable()) return true;
  const bool drained =
      s.drained.wait_for(lock, timeout, [&s] { return s.queue.empty() && !s.writing; });
  s.stopping = true;
  s.wake_writer.notify_one();
  if (!drained) {
    // The output is blocked: count what waits in the queue as dropped, and cut the batch being
    // written at the end of the line being written (counted when its write ends). Wait a little
    // for that line end; if even it does not come, leave the thread, which holds its own
    // reference to the state.
    s.dropped_full.fetch_add(s.queued_lines, std::memory_order_relaxed);
    s.queue.clear();
    s.queued_bytes = 0;
    s.queued_lines = 0;
    s.cut.store(true, std::memory_order_relaxed);
    if (s.drained.wait_for(lock, kLineEndGrace, [&s] { return !s.writing; })) {
      lock.unlock();
      s.thread.join();
    } else {
      lock.unlock();
      s.thread.detach();
    }
    return false;
  }
  lock.unlock();
  s.thread.join();
  return true;
}

OutputStats LineWriter::stats() const {
  const State& s = *state_;
  OutputStats out;
  std::lock_guard lock(const_cast<std::mutex&>(s.mutex));
  out.lines_written = s.lines_written.load(std::memory_order_relaxed);
  for (size_t k = 0; k < kLineKinds; ++k) {
    out.lines_written_by_kind[k] = s.lines_written_by_kind[k].load(std::memory_order_relaxed);
  }
  out.output_errno = s.output_errno.load(std::memory_order_relaxed);
  out.bytes_written = s.bytes_written.load(std::memory_order_relaxed);
  out.lines_dropped_queue_full = s.dropped_full.load(std::memory_order_relaxed);
  out.lines_dropped_write_error = s.dropped_error.load(std::memory_order_relaxed);
  out.queued_bytes = s.queued_bytes;
  return out;
}

}  // namespace netmon

namespace netmon {

int LineWriter::output_error() const {
  return state_->output_errno.load(std::memory_order_relaxed);
}

int LineWriter::check_output() {
  State& s = *state_;
  if (const int error = output_error()) return error;
  pollfd pfd{s.fd, 0, 0};  // POLLERR and POLLHUP are reported without being asked for
  if (::poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLERR | POLLNVAL)) != 0) {
    std::lock_guard lock(s.mutex);
    if (!s.output_failed) {
      s.output_errno.store((pfd.revents & POLLNVAL) != 0 ? EBADF : EPIPE,
                           std::memory_order_relaxed);
      s.output_failed = true;
      s.room.notify_all();
    }
  }
  return output_error();
}

}  // namespace netmon
