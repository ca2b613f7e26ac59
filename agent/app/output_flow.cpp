#include "app/output_flow.h"

#include <algorithm>
#include <utility>

namespace netmon {

OutputFlow::OutputFlow(LineWriter& writer, Settings settings)
    : writer_(writer),
      batch_bytes_(settings.batch_bytes),
      max_pause_(settings.max_pause),
      wait_step_(settings.wait_step),
      stop_(settings.stop),
      stop_drain_(settings.stop_drain),
      now_(std::move(settings.now)) {
  batch_.reserve(batch_bytes_ + 4096);
}

void OutputFlow::flush() {
  if (lines_.total() == 0) return;
  if (state_ != State::kDraining && stop_ && stop_->load(std::memory_order_relaxed)) {
    drain_deadline_ = writer_.drain_until(Clock::now() + stop_drain_);
    state_ = State::kDraining;
  }
  switch (state_) {
    case State::kDraining:
      writer_.submit(batch_, lines_);  // waits for room until the drain deadline
      break;
    case State::kShedding:
      if (writer_.submit(batch_, lines_)) state_ = State::kFlowing;  // else dropped at once
      break;
    case State::kFlowing:
    case State::kHeld:
      if (!writer_.offer(batch_, lines_)) {
        state_ = State::kHeld;
        return;
      }
      state_ = State::kFlowing;
      break;
  }
  lines_ = LineCount();
}

void OutputFlow::wait_or_shed(RingFill fill) {
  if (state_ != State::kHeld) return;
  const Clock::time_point begin = now_();
  if (!in_episode_) {
    in_episode_ = true;
    episode_start_ = begin;
    ++episodes_;
  }
  if (begin - episode_start_ < max_pause_ && fill.size > 0 && fill.used * 2 < fill.size) {
    // Leave the records in the ring buffer a little longer.
    writer_.wait_for_room(batch_.size(), wait_step_);
    waited_ += now_() - begin;
    flush();
    if (state_ != State::kHeld) in_episode_ = false;
    return;
  }
  writer_.drop(batch_, lines_);
  lines_ = LineCount();
  state_ = State::kShedding;
  in_episode_ = false;
  ++sheds_;
}

void OutputFlow::stop(const std::function<void()>& read_rest) {
  drain_deadline_ = writer_.drain_until(Clock::now() + stop_drain_);
  // Draining whatever ended the run loop (a stop signal, a failed poll, a broken stdout): a held
  // batch and the rest wait for room and are written, or dropped and counted, never left held.
  state_ = State::kDraining;
  flush();  // a held batch first
  read_rest();
  flush();
}

bool OutputFlow::finish() {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(drain_deadline_ - Clock::now());
  return writer_.finish(std::max(left, std::chrono::milliseconds(0)));
}

}  // namespace netmon
