// The OutputFlow's state machine on its own: a batch the output queue refuses is held and stops the
// reader; while held, the reader waits in rounds while the ring buffer is less than half full and
// within the pause's bound from the episode's first round, else sheds; an episode ends when the
// queue takes the batch; from the stop on, batches wait for room until the drain deadline.
#include "app/output_flow.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "output_pipe.h"
#include "stalled_output.h"

namespace netmon {
namespace {

using namespace std::chrono_literals;
using Clock = OutputFlow::Clock;
using State = OutputFlow::State;

constexpr RingFill kQuiet{100, 4096};

// A flow of 16 KiB batches into an output queue of 64 KiB whose writer thread is stalled
// (stalled_output.h) on a pipe nobody reads until the test does, with a clock the test moves: each
// reading of it returns `now_` and then advances it by `tick_`.
class OutputFlowTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { signal(SIGPIPE, SIG_IGN); }

  void SetUp() override {
    ASSERT_TRUE(pipe_.ok());
    writer_ = std::make_unique<LineWriter>(pipe_.write_fd(), 64u << 10);
    filled_ = test::stall(*writer_, pipe_.write_fd());
    ASSERT_GT(filled_, 0u);
  }

  void TearDown() override {
    flow_.reset();
    if (!pipe_.reading()) read_everything();  // lets the stalled writer finish
    (void)finish_reading();
    writer_.reset();
  }

  void make_flow(std::chrono::milliseconds max_pause = 1000ms,
                 std::chrono::milliseconds wait_step = 0ms) {
    OutputFlow::Settings s;
    s.batch_bytes = 16u << 10;
    s.max_pause = max_pause;
    s.wait_step = wait_step;
    s.stop = &stop_;
    s.stop_drain = 5000ms;
    s.now = [this] {
      const Clock::time_point t = now_;
      now_ += tick_;
      return t;
    };
    flow_ = std::make_unique<OutputFlow>(*writer_, std::move(s));
  }

  // Appends lines of 600 bytes until the flow holds a batch (or `limit` lines); how many.
  size_t append_until_held(size_t limit = 100000) {
    size_t n = 0;
    while (n < limit && flow_->reading()) {
      flow_->batch().append(599, 'x').push_back('\n');
      flow_->line_added(2);
      ++n;
    }
    return n;
  }

  // Reads what fill_pipe() wrote: the writer thread writes on until the pipe is full again.
  void unstall_once() {
    std::string buf(filled_, '\0');
    size_t got = 0;
    while (got < filled_) {
      const ssize_t n = ::read(pipe_.read_fd(), buf.data() + got, filled_ - got);
      ASSERT_GT(n, 0);
      got += static_cast<size_t>(n);
    }
  }

  void read_everything() { pipe_.read_everything(); }

  // Stops the writer once it has written everything (through the flow's finish() after its
  // stop()), closes the pipe, waits for the reader. Whether the writer drained in time.
  bool finish_reading(bool stopped = false) {
    const bool drained = stopped ? flow_->finish() : writer_->finish(5s);
    pipe_.close_and_join();
    return drained;
  }

  test::OutputPipe pipe_;
  size_t filled_ = 0;
  std::unique_ptr<LineWriter> writer_;
  std::atomic<bool> stop_{false};
  Clock::time_point now_{};
  Clock::duration tick_{};
  std::unique_ptr<OutputFlow> flow_;
};

TEST_F(OutputFlowTest, WaitsWithinTheBoundFromTheEpisodesFirstRoundThenSheds) {
  make_flow(1000ms);
  append_until_held();
  ASSERT_EQ(flow_->state(), State::kHeld);
  EXPECT_FALSE(flow_->reading());
  EXPECT_GE(flow_->held_bytes(), 16u << 10);
  const Clock::time_point t0 = now_;
  flow_->wait_or_shed(kQuiet);  // starts an episode
  EXPECT_EQ(flow_->state(), State::kHeld);
  now_ = t0 + 999ms;
  flow_->wait_or_shed(kQuiet);
  EXPECT_EQ(flow_->state(), State::kHeld);
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, 0u);
  now_ = t0 + 1000ms;  // the bound counts from the episode's start
  flow_->wait_or_shed(kQuiet);
  EXPECT_EQ(flow_->state(), State::kShedding);
  EXPECT_TRUE(flow_->reading());
  EXPECT_EQ(flow_->held_bytes(), 0u);
  EXPECT_GT(writer_->stats().lines_dropped_queue_full, 0u);
  EXPECT_EQ(flow_->episodes(), 1u);
  EXPECT_EQ(flow_->sheds(), 1u);
}

TEST_F(OutputFlowTest, WaitsOnlyWhileTheRingBufferIsLessThanHalfFull) {
  make_flow();
  append_until_held();
  flow_->wait_or_shed(RingFill{2047, 4096});
  EXPECT_EQ(flow_->state(), State::kHeld);
  flow_->wait_or_shed(RingFill{2048, 4096});
  EXPECT_EQ(flow_->state(), State::kShedding);
  EXPECT_EQ(flow_->episodes(), 1u);
  EXPECT_EQ(flow_->sheds(), 1u);
}

TEST_F(OutputFlowTest, AnUnknownFillNeverWaits) {
  make_flow();
  append_until_held();
  flow_->wait_or_shed(RingFill{0, 0});
  EXPECT_EQ(flow_->state(), State::kShedding);
  EXPECT_EQ(flow_->sheds(), 1u);
}

TEST_F(OutputFlowTest, ZeroBoundNeverWaits) {
  make_flow(0ms);
  append_until_held();
  flow_->wait_or_shed(kQuiet);
  EXPECT_EQ(flow_->state(), State::kShedding);
  EXPECT_EQ(flow_->sheds(), 1u);
  EXPECT_EQ(flow_->waited(), Clock::duration::zero());
}

TEST_F(OutputFlowTest, SheddingDropsWhatDoesNotFitUntilTheQueueTakesABatch) {
  make_flow(0ms);
  const size_t fed = append_until_held();
  flow_->wait_or_shed(kQuiet);
  ASSERT_EQ(flow_->state(), State::kShedding);
  const uint64_t dropped_first = writer_->stats().lines_dropped_queue_full;
  // Never held again while shedding: a full batch that does not fit is dropped at once.
  const size_t more = append_until_held(200);
  EXPECT_EQ(more, 200u);
  EXPECT_EQ(flow_->state(), State::kShedding);
  EXPECT_GT(writer_->stats().lines_dropped_queue_full, dropped_first);
  read_everything();
  ASSERT_TRUE(test::queue_empties(*writer_));
  const size_t after = append_until_held(40);
  flow_->flush();  // taken: flowing again
  EXPECT_EQ(flow_->state(), State::kFlowing);
  const uint64_t dropped = writer_->stats().lines_dropped_queue_full;
  ASSERT_TRUE(finish_reading());
  EXPECT_EQ(test::count_lines(pipe_.received()) + dropped, fed + more + after);
  EXPECT_EQ(flow_->episodes(), 1u);
  EXPECT_EQ(flow_->sheds(), 1u);
}

TEST_F(OutputFlowTest, AnEpisodeEndsWhenTheQueueTakesTheBatchAndTheNextHasItsOwnBound) {
  make_flow(1000ms, 10ms);
  tick_ = 3ms;  // each round waits 3 ms by this clock
  append_until_held();
  ASSERT_EQ(flow_->state(), State::kHeld);
  flow_->wait_or_shed(kQuiet);
  uint64_t rounds = 1;
  unstall_once();  // the writer takes from the queue until the pipe is full again
  while (flow_->state() == State::kHeld && rounds < 1000) {
    now_ -= 2 * tick_;  // keep this episode within its bound
    flow_->wait_or_shed(kQuiet);
    ++rounds;
  }
  ASSERT_EQ(flow_->state(), State::kFlowing);
  EXPECT_EQ(flow_->episodes(), 1u);
  EXPECT_EQ(flow_->sheds(), 0u);
  EXPECT_EQ(flow_->waited(), rounds * tick_);
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, 0u);

  // Held again, 5 s later: a new episode, whose bound starts now, so it waits (the queue may
  // take the batch meanwhile, as the writer thread may still be writing).
  append_until_held();
  ASSERT_EQ(flow_->state(), State::kHeld);
  now_ += 5s;
  flow_->wait_or_shed(kQuiet);
  EXPECT_NE(flow_->state(), State::kShedding);
  EXPECT_EQ(flow_->episodes(), 2u);
  EXPECT_EQ(flow_->sheds(), 0u);
  EXPECT_EQ(flow_->waited(), (rounds + 1) * tick_);
}

TEST_F(OutputFlowTest, StopHandsOverTheHeldBatchAndTheRestWaitingForRoom) {
  make_flow();
  const size_t fed = append_until_held();
  ASSERT_EQ(flow_->state(), State::kHeld);
  stop_ = true;  // the stop signal
  std::thread late_reader([this] {
    std::this_thread::sleep_for(100ms);
    read_everything();
  });
  size_t rest = 0;
  flow_->stop([&] {
    EXPECT_TRUE(flow_->reading());  // the held batch went first
    rest = 200;
    for (size_t i = 0; i < rest; ++i) {
      flow_->batch().append(599, 'x').push_back('\n');
      flow_->line_added(2);
    }
  });
  EXPECT_EQ(flow_->state(), State::kDraining);
  late_reader.join();
  ASSERT_TRUE(finish_reading(true));
  EXPECT_EQ(test::count_lines(pipe_.received()), fed + rest);
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, 0u);
  EXPECT_EQ(flow_->episodes(), 0u);  // no round was asked: no wait counted
}

// A run loop that ends without the stop signal (a failed poll, a broken stdout) still drains: the
// held batch is written or counted as dropped, never left held and uncounted.
TEST_F(OutputFlowTest, StopWithoutTheStopFlagDrainsTheHeldBatchToo) {
  make_flow();
  const size_t fed = append_until_held();
  ASSERT_EQ(flow_->state(), State::kHeld);
  std::thread late_reader([this] {
    std::this_thread::sleep_for(100ms);
    read_everything();
  });
  flow_->stop([] {});
  EXPECT_EQ(flow_->state(), State::kDraining);
  late_reader.join();
  ASSERT_TRUE(finish_reading(true));
  const OutputStats stats = writer_->stats();
  EXPECT_EQ(test::count_lines(pipe_.received()), fed);
  EXPECT_EQ(stats.lines_written, fed);
  EXPECT_EQ(stats.lines_dropped_queue_full, 0u);
}

TEST_F(OutputFlowTest, WithoutTheStopFlagAFlushOffersAndHolds) {
  make_flow();
  append_until_held();
  flow_->flush();  // still no room: still held, nothing dropped
  EXPECT_EQ(flow_->state(), State::kHeld);
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, 0u);
}

}  // namespace
}  // namespace netmon
