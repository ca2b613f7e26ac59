// ReaderPause: while the pipeline holds a batch the output queue has no room for, decides whether
// the ring-buffer reader waits for room or gives up and sheds (drops what does not fit, counted).
//
// Waiting moves the backlog from the output queue (~2 KiB of JSON per event, in the agent's
// heap) to the kernel's ring buffer (~200 bytes per record, memory the agent holds anyway). The
// reader waits only
// - while the ring buffer is less than half full: the other half takes what arrives until the
//   next decision, so the kernel never drops a record because stdout is slow; and
// - for at most `max_pause` from the first refusal of an episode: the reader also feeds the
//   connection metrics and the process table, which must not lag far behind the kernel when
//   stdout is blocked for good.
// An episode ends when the queue takes the held batch, or when the reader sheds.
#pragma once

#include <chrono>
#include <cstdint>

#include "bpf/probe.h"

namespace netmon {

class ReaderPause {
 public:
  using Clock = std::chrono::steady_clock;

  // `max_pause` 0: never wait (shed at once).
  explicit ReaderPause(std::chrono::milliseconds max_pause) : max_pause_(max_pause) {}

  // The pipeline holds a batch at `now`: whether the reader may wait for room. The first call of
  // an episode starts it.
  bool may_wait(Clock::time_point now, RingFill fill) {
    if (!in_episode_) {
      in_episode_ = true;
      started_ = now;
      ++episodes_;
    }
    return now - started_ < max_pause_ && fill.size > 0 && fill.used * 2 < fill.size;
  }

  // The reader waited `waited` for room.
  void waited(Clock::duration waited) { waited_ += waited; }

  // The output queue took the held batch (`shed` false) or the reader gave up (`shed` true).
  void end(bool shed) {
    if (!in_episode_) return;
    in_episode_ = false;
    if (shed) ++sheds_;
  }

  uint64_t episodes() const { return episodes_; }  // times the output queue refused a batch
  uint64_t sheds() const { return sheds_; }        // episodes that ended in a drop
  Clock::duration waited() const { return waited_; }

 private:
  const std::chrono::milliseconds max_pause_;
  bool in_episode_ = false;
  Clock::time_point started_{};
  uint64_t episodes_ = 0;
  uint64_t sheds_ = 0;
  Clock::duration waited_{};
};

}  // namespace netmon
