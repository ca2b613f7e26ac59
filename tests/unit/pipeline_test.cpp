// The pipeline's side of back-pressure, through its OutputFlow: a batch the output queue has no
// room for is held and the reader told to stop, offered again by flush(), dropped and counted
// when the reader sheds; from the stop on, batches wait for room instead.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "app/output_flow.h"
#include "app/pipeline.h"
#include "output_pipe.h"
#include "records.h"
#include "stalled_output.h"

namespace netmon {
namespace {

using namespace std::chrono_literals;

// The Close of a connection `cookie` (an outbound IPv4 one, owner not in the process table).
std::vector<std::byte> close_record(uint64_t cookie) {
  nm_conn_record r = test::make_record(NM_CONN_CLOSE, NM_AF_INET);
  r.cookie = cookie;
  return test::to_bytes(r);
}

// A pipeline writing into a pipe that nobody reads until read_everything(), through an output
// queue of 64 KiB, with batches of 16 KiB (a line is ~600 bytes here). Before any record, the
// writer thread is stalled (stalled_output.h) on a filled pipe and a filler with no newline, so
// the queue changes only once the test reads, never by the writer thread taking batches late (as
// it did on a loaded machine, where it started writing only after a test had filled the queue).
class PipelineBackpressureTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { signal(SIGPIPE, SIG_IGN); }

  void SetUp() override {
    ASSERT_TRUE(pipe_.ok());
    char dir[] = "/tmp/netmon-pipeline-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    proc_dir_ = dir;
    writer_ = std::make_unique<LineWriter>(pipe_.write_fd(), 64u << 10);
    processes_ = std::make_unique<ProcessTable>(ProcReader(proc_dir_), 1024);
    OutputFlow::Settings flow;
    flow.batch_bytes = 16u << 10;
    flow.stop = &stop_;
    flow.stop_drain = 5000ms;
    output_ = std::make_unique<OutputFlow>(*writer_, std::move(flow));
    pipeline_ = std::make_unique<Pipeline>(*output_, *processes_, 40);
    stall_writer();
  }

  void TearDown() override {
    pipeline_.reset();
    output_.reset();
    if (pipe_.reading()) (void)finish_reading();
    writer_.reset();
    rmdir(proc_dir_.c_str());
  }

  // Once read_everything() runs: stops the writer when it has written everything, closes the
  // pipe and waits for the reader. Whether the writer drained in time.
  bool finish_reading() {
    const bool drained = writer_->finish(5s);
    pipe_.close_and_join();
    return drained;
  }

  // Blocks the writer's thread in write(2) until read_everything(); what it writes there
  // counts as no line.
  void stall_writer() { ASSERT_GT(test::stall(*writer_, pipe_.write_fd()), 0u); }

  // Feeds records until the pipeline asks to stop; returns how many it took.
  size_t feed_until_held(size_t limit) {
    size_t n = 0;
    while (n < limit) {
      const auto r = close_record(++cookie_);
      ++n;
      if (!pipeline_->on_record(std::span<const std::byte>(r.data(), r.size()))) break;
    }
    return n;
  }

  void read_everything() { pipe_.read_everything(); }

  test::OutputPipe pipe_;
  std::string proc_dir_;
  std::unique_ptr<LineWriter> writer_;
  std::unique_ptr<ProcessTable> processes_;
  std::atomic<bool> stop_{false};
  std::unique_ptr<OutputFlow> output_;
  std::unique_ptr<Pipeline> pipeline_;
  uint64_t cookie_ = 0;
};

TEST_F(PipelineBackpressureTest, HoldsTheBatchTheQueueRefusesAndStopsTheReader) {
  // The queue (64 KiB) takes about a hundred lines; then a batch is held.
  const size_t fed = feed_until_held(100000);
  ASSERT_LT(fed, 100000u);
  EXPECT_FALSE(output_->reading());
  EXPECT_GE(output_->held_bytes(), 16u << 10);
  output_->flush();  // still no room: still held, nothing dropped
  EXPECT_FALSE(output_->reading());
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, 0u);

  // The reader resumes: the held batch goes on the next flush, and every line arrives.
  read_everything();
  ASSERT_TRUE(writer_->wait_for_room(output_->held_bytes(), 5s));
  output_->flush();
  EXPECT_TRUE(output_->reading());
  output_->flush();
  ASSERT_TRUE(finish_reading());
  EXPECT_EQ(test::count_lines(pipe_.received()), fed);
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, 0u);
}

TEST_F(PipelineBackpressureTest, ShedDropsAndCountsUntilTheQueueTakesABatchAgain) {
  const size_t fed = feed_until_held(100000);
  ASSERT_FALSE(output_->reading());
  output_->wait_or_shed(RingFill{});  // the ring buffer's fill unknown: shed at once
  EXPECT_TRUE(output_->reading());
  const uint64_t dropped_first = writer_->stats().lines_dropped_queue_full;
  EXPECT_GT(dropped_first, 0u);

  // Shedding: a full batch that does not fit is dropped at once, never held.
  const size_t more = feed_until_held(200);
  EXPECT_EQ(more, 200u);
  output_->flush();
  EXPECT_TRUE(output_->reading());
  const uint64_t dropped = writer_->stats().lines_dropped_queue_full;
  EXPECT_GT(dropped, dropped_first);

  // The reader resumes: the queue takes a batch, shedding ends, and everything not dropped
  // arrives; dropped + received = fed.
  read_everything();
  ASSERT_TRUE(test::queue_empties(*writer_));
  const size_t after = feed_until_held(40);
  EXPECT_EQ(after, 40u);
  output_->flush();
  EXPECT_TRUE(output_->reading());
  ASSERT_TRUE(finish_reading());
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, dropped);  // nothing more dropped
  EXPECT_EQ(test::count_lines(pipe_.received()) + dropped, fed + more + after);
}

TEST_F(PipelineBackpressureTest, StoppingWaitsForRoomInsteadOfHolding) {
  const size_t fed = feed_until_held(100000);
  ASSERT_FALSE(output_->reading());
  stop_ = true;
  std::thread late_reader([this] {
    std::this_thread::sleep_for(100ms);
    read_everything();
  });
  output_->flush();  // draining: waits for the reader instead of holding or dropping
  EXPECT_TRUE(output_->reading());
  late_reader.join();
  ASSERT_TRUE(finish_reading());
  EXPECT_EQ(test::count_lines(pipe_.received()), fed);
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, 0u);
}

}  // namespace
}  // namespace netmon
