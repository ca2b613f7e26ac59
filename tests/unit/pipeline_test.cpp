// The pipeline's side of back-pressure: a batch the output queue has no room for is held and
// the reader told to stop, offered again by flush(), dropped and counted by shed(); and the
// ReaderPause that decides between waiting and shedding.
#include <fcntl.h>
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

#include "app/pipeline.h"
#include "app/reader_pause.h"
#include "common/unique_fd.h"
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

size_t count_lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
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
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
    read_end_ = UniqueFd(fds[0]);
    write_end_ = UniqueFd(fds[1]);
    char dir[] = "/tmp/netmon-pipeline-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    proc_dir_ = dir;
    writer_ = std::make_unique<LineWriter>(write_end_.get(), 64u << 10);
    processes_ = std::make_unique<ProcessTable>(ProcReader(proc_dir_), 1024);
    pipeline_ = std::make_unique<Pipeline>(*writer_, *processes_, 40, PipelineDeps{}, 16u << 10);
    stall_writer();
  }

  void TearDown() override {
    pipeline_.reset();
    if (reader_.joinable()) (void)finish_reading();
    writer_.reset();
    rmdir(proc_dir_.c_str());
  }

  // Once read_everything() runs: stops the writer when it has written everything, closes the
  // pipe and waits for the reader. Whether the writer drained in time.
  bool finish_reading() {
    const bool drained = writer_->finish(5s);
    write_end_.reset();
    reader_.join();
    return drained;
  }

  // Blocks the writer's thread in write(2) until read_everything(); what it writes there
  // counts as no line.
  void stall_writer() {
    ASSERT_GT(test::fill_pipe(write_end_.get()), 0u);
    std::string filler = "in-flight";
    ASSERT_TRUE(writer_->submit(filler, 0));
    ASSERT_TRUE(test::queue_empties(*writer_));
  }

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

  UniqueFd read_end_, write_end_;
  std::string proc_dir_;
  std::unique_ptr<LineWriter> writer_;
  std::unique_ptr<ProcessTable> processes_;
  std::unique_ptr<Pipeline> pipeline_;
  std::thread reader_;
  std::string received_;
  uint64_t cookie_ = 0;
};

TEST_F(PipelineBackpressureTest, HoldsTheBatchTheQueueRefusesAndStopsTheReader) {
  // The queue (64 KiB) takes about a hundred lines; then a batch is held.
  const size_t fed = feed_until_held(100000);
  ASSERT_LT(fed, 100000u);
  EXPECT_TRUE(pipeline_->held());
  EXPECT_GE(pipeline_->held_bytes(), 16u << 10);
  pipeline_->flush();  // still no room: still held, nothing dropped
  EXPECT_TRUE(pipeline_->held());
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, 0u);

  // The reader resumes: the held batch goes on the next flush, and every line arrives.
  read_everything();
  ASSERT_TRUE(writer_->wait_for_room(pipeline_->held_bytes(), 5s));
  pipeline_->flush();
  EXPECT_FALSE(pipeline_->held());
  pipeline_->flush();
  ASSERT_TRUE(finish_reading());
  EXPECT_EQ(count_lines(received_), fed);
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, 0u);
}

TEST_F(PipelineBackpressureTest, ShedDropsAndCountsUntilTheQueueTakesABatchAgain) {
  const size_t fed = feed_until_held(100000);
  ASSERT_TRUE(pipeline_->held());
  pipeline_->shed();
  EXPECT_FALSE(pipeline_->held());
  const uint64_t dropped_first = writer_->stats().lines_dropped_queue_full;
  EXPECT_GT(dropped_first, 0u);

  // Shedding: a full batch that does not fit is dropped at once, never held.
  const size_t more = feed_until_held(200);
  EXPECT_EQ(more, 200u);
  pipeline_->flush();
  EXPECT_FALSE(pipeline_->held());
  const uint64_t dropped = writer_->stats().lines_dropped_queue_full;
  EXPECT_GT(dropped, dropped_first);

  // The reader resumes: the queue takes a batch, shedding ends, and everything not dropped
  // arrives; dropped + received = fed.
  read_everything();
  ASSERT_TRUE(test::queue_empties(*writer_));
  const size_t after = feed_until_held(40);
  EXPECT_EQ(after, 40u);
  pipeline_->flush();
  EXPECT_FALSE(pipeline_->held());
  ASSERT_TRUE(finish_reading());
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, dropped);  // nothing more dropped
  EXPECT_EQ(count_lines(received_) + dropped, fed + more + after);
}

TEST_F(PipelineBackpressureTest, StoppingWaitsForRoomInsteadOfHolding) {
  std::atomic<bool> stop{false};
  pipeline_->set_stop_flag(&stop, 5000ms);
  const size_t fed = feed_until_held(100000);
  ASSERT_TRUE(pipeline_->held());
  stop = true;
  std::thread late_reader([this] {
    std::this_thread::sleep_for(100ms);
    read_everything();
  });
  pipeline_->flush();  // draining: waits for the reader instead of holding or dropping
  EXPECT_FALSE(pipeline_->held());
  late_reader.join();
  ASSERT_TRUE(finish_reading());
  EXPECT_EQ(count_lines(received_), fed);
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, 0u);
}

TEST(ReaderPauseTest, WaitsWhileTheRingBufferIsLessThanHalfFullAndWithinTheBound) {
  using Clock = ReaderPause::Clock;
  ReaderPause pause(1000ms);
  const Clock::time_point t0{};
  const RingFill quiet{100, 4096};
  EXPECT_TRUE(pause.may_wait(t0, quiet));  // starts an episode
  EXPECT_TRUE(pause.may_wait(t0 + 999ms, quiet));
  EXPECT_FALSE(pause.may_wait(t0 + 1000ms, quiet));  // the bound counts from the episode's start
  EXPECT_FALSE(pause.may_wait(t0 + 10ms, RingFill{2048, 4096}));  // half full
  EXPECT_TRUE(pause.may_wait(t0 + 10ms, RingFill{2047, 4096}));
  EXPECT_FALSE(pause.may_wait(t0 + 10ms, RingFill{0, 0}));  // fill unknown: never wait
  pause.waited(30ms);
  pause.end(true);
  EXPECT_EQ(pause.episodes(), 1u);
  EXPECT_EQ(pause.sheds(), 1u);
  // A new episode has its own bound.
  EXPECT_TRUE(pause.may_wait(t0 + 5s, quiet));
  pause.waited(20ms);
  pause.end(false);
  pause.end(false);  // no episode: nothing counted
  EXPECT_EQ(pause.episodes(), 2u);
  EXPECT_EQ(pause.sheds(), 1u);
  EXPECT_EQ(pause.waited(), 50ms);
}

TEST(ReaderPauseTest, ZeroBoundNeverWaits) {
  ReaderPause pause(0ms);
  EXPECT_FALSE(pause.may_wait(ReaderPause::Clock::now(), RingFill{0, 4096}));
  pause.end(true);
  EXPECT_EQ(pause.sheds(), 1u);
}

}  // namespace
}  // namespace netmon
