// OutputFlow: the polling thread's flow control between the kernel's ring buffer and the output
// queue (LineWriter). It owns the batch of JSON lines being built, hands it to the writer, and
// decides, when the queue has no room, whether the ring-buffer reader stops (the batch is held),
// waits for room, or sheds. The only user of the writer's queue-full and stop calls.
//
// Holding moves the backlog from the output queue (~2 KiB of JSON per event, in the agent's heap)
// to the kernel's ring buffer (~200 bytes per record, memory the agent holds anyway). While held,
// the reader waits for room only
// - while the ring buffer is less than half full: the other half takes what arrives until the
//   next decision, so the kernel never drops a record because stdout is slow; and
// - for at most `max_pause` from the first decision of an episode: the reader also feeds the
//   connection metrics and the process table, which must not lag far behind the kernel when
//   stdout is blocked for good.
// Past either bound it sheds: the held batch is dropped (counted by the writer as output_queue),
// and until the queue takes a batch again, batches that do not fit are dropped at once. From the
// stop signal on, batches wait for room instead, up to the drain deadline (`stop_drain` from the
// first hand-over that saw the signal, or from stop()), which the final drain (finish()) shares.
//
// States, and what moves between them. A hand-over: line_added() completed a batch (not while
// Held), or flush(). A round: wait_or_shed(), the run loop's one question while Held.
//
//                        hand-over refused: the reader stops
//           +---------+ ------------------------------------> +------+
//      ---> | Flowing |                                       | Held | <-- round within the
//           +---------+ <------------------------------------ +------+     bounds: wait, offer
//             ^          taken (at a hand-over or a round)       |         again, still refused
//             |                                                  |
//             | hand-over taken          round past a bound: drop the held batch (a shed)
//             |                                                  v
//             +------------------------------------------- +----------+
//                                                          | Shedding | <-- hand-over that
//                                                          +----------+     does not fit: dropped
//
//   Flowing, Held or Shedding -- hand-over that sees the stop flag --> Draining (final): every
//   hand-over waits for room until the drain deadline, then drops what still does not fit.
//
// Only Held stops the reader (reading() is false): the records not read yet stay in the ring
// buffer.
//
// An episode (output_waits) begins at the first round of a Held state and ends when it is left;
// `waited` sums the rounds' waits for room; a shed is an episode that ended in a drop.
//
// Threads: the polling thread only (the writer's own thread is the LineWriter's business).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "bpf/probe.h"
#include "output/line_writer.h"

namespace netmon {

class OutputFlow {
 public:
  using Clock = std::chrono::steady_clock;

  struct Settings {
    // A batch is handed over once this large, and at every flush().
    size_t batch_bytes = 256u << 10;
    // How long the reader may wait for room from the first round of an episode (0: never wait,
    // shed at once).
    std::chrono::milliseconds max_pause{1000};
    // One round's wait for room, after which the bounds are looked at again.
    std::chrono::milliseconds wait_step{10};
    // Set by a signal handler (may stay null): from then on batches wait for room, for
    // `stop_drain` at most (shared with finish()), instead of being held or dropped.
    const std::atomic<bool>* stop = nullptr;
    std::chrono::milliseconds stop_drain{5000};
    // The clock of the pause's bound and of `waited` (tests pass their own).
    std::function<Clock::time_point()> now = [] { return Clock::now(); };
  };

  enum class State { kFlowing, kHeld, kShedding, kDraining };

  // `writer` must outlive the flow.
  OutputFlow(LineWriter& writer, Settings settings);
  OutputFlow(const OutputFlow&) = delete;
  OutputFlow& operator=(const OutputFlow&) = delete;

  // The pipeline: appends whole lines to batch(), then tells line_added() each one's kind
  // (< kLineKinds). A batch of `batch_bytes` is handed over at once (unless one is held).
  std::string& batch() { return batch_; }
  void line_added(size_t kind) {
    ++lines_.by_kind[kind];
    if (batch_.size() >= batch_bytes_ && state_ != State::kHeld) flush();
  }
  // Whether the ring-buffer reader may read more records: false while a batch is held.
  bool reading() const { return state_ != State::kHeld; }

  // The run loop, after each poll round: hands the batch over (see the states above).
  void flush();
  // The run loop, once per round while a batch is held (instead of reading): waits up to
  // `wait_step` for room and offers the batch again, or, past the bounds (`fill`: the ring
  // buffer's fill level; unknown counts as full), drops it and sheds.
  void wait_or_shed(RingFill fill);

  // The stop sequence, once the run loop has ended (for whatever reason: the stop flag need not
  // be set): enters Draining, so that from now on the writer waits for room until the drain
  // deadline (`stop_drain` from now, or from the first hand-over that saw the stop flag); hands
  // over the held batch, calls `read_rest` (which delivers what the kernel still holds to the
  // pipeline), and hands that over too. Every line is then written or counted as lost.
  void stop(const std::function<void()>& read_rest);
  // After stop(): waits for the writer to write everything until the drain deadline, then stops
  // it. False when the output did not drain (the rest is counted as lost).
  bool finish();

  State state() const { return state_; }
  size_t held_bytes() const { return state_ == State::kHeld ? batch_.size() : 0; }

  // Rounds' statistics (netmon_output_waits_total, netmon_output_wait_seconds_total, the "output
  // waits" of the summary).
  uint64_t episodes() const { return episodes_; }  // times the output queue held up the reader
  uint64_t sheds() const { return sheds_; }        // episodes that ended in a drop
  Clock::duration waited() const { return waited_; }

 private:
  LineWriter& writer_;
  const size_t batch_bytes_;
  const std::chrono::milliseconds max_pause_;
  const std::chrono::milliseconds wait_step_;
  const std::atomic<bool>* const stop_;
  const std::chrono::milliseconds stop_drain_;
  const std::function<Clock::time_point()> now_;

  std::string batch_;
  LineCount lines_;  // the lines of batch_, by kind
  State state_ = State::kFlowing;
  Clock::time_point drain_deadline_{};

  bool in_episode_ = false;  // a Held state's first round was seen
  Clock::time_point episode_start_{};
  uint64_t episodes_ = 0;
  uint64_t sheds_ = 0;
  Clock::duration waited_{};
};

}  // namespace netmon
