#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "output/line_writer.h"
#include "stalled_output.h"

namespace netmon {
namespace {

using namespace std::chrono_literals;
using test::eventually;
using test::fill_pipe;
using test::queue_empties;

struct Pipe {
  UniqueFd read_end;
  UniqueFd write_end;
};

Pipe make_pipe() {
  int fds[2];
  EXPECT_EQ(pipe2(fds, O_CLOEXEC), 0);
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// Reads until EOF (every write end closed).
std::string read_all(int fd) {
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// How many bytes fill_pipe() writes into a fresh pipe.
size_t fill_pipe_size() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return 0;
  const size_t n = fill_pipe(fds[1]);
  close(fds[0]);
  close(fds[1]);
  return n;
}

// Reads exactly `n` bytes (blocking), or fewer at end of file.
std::string read_exactly(int fd, size_t n) {
  std::string out;
  char buf[65536];
  while (out.size() < n) {
    const ssize_t r = ::read(fd, buf, std::min(sizeof(buf), n - out.size()));
    if (r <= 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

// Blocks `writer` (capacity 8, writing into a full pipe): its thread takes "first\n" and blocks
// writing it, and "wait\n" (5 bytes) waits in the queue behind it.
void block_with_one_queued(LineWriter& writer) {
  std::string batch = "first\n";
  ASSERT_TRUE(writer.submit(batch, 1));
  ASSERT_TRUE(queue_empties(writer));
  batch = "wait\n";
  ASSERT_TRUE(writer.submit(batch, 1));
}

// Stops the writer once `reader`, a thread reading the pipe, has taken everything, then closes
// the pipe so that the reader ends: whether the writer drained in time.
bool finish_read_by(LineWriter& writer, Pipe& p, std::thread& reader) {
  const bool drained = writer.finish(5s);
  p.write_end.reset();
  reader.join();
  return drained;
}

// Unblocks the filled pipe with a reader, then stops the writer: whether it drained in time.
bool finish_with_reader(LineWriter& writer, Pipe& p) {
  std::thread reader([&] { (void)read_all(p.read_end.get()); });
  return finish_read_by(writer, p, reader);
}

class LineWriterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { signal(SIGPIPE, SIG_IGN); }
};

TEST_F(LineWriterTest, BatchesArriveWholeAndInOrder) {
  Pipe p = make_pipe();
  LineWriter writer(p.write_end.get(), 1 << 20);
  std::string batch = "a\nb\n";
  EXPECT_TRUE(writer.submit(batch, 2));
  batch = "c\n";
  EXPECT_TRUE(writer.submit(batch, 1));
  batch = "d\ne\nf\n";
  EXPECT_TRUE(writer.submit(batch, 3));
  ASSERT_TRUE(writer.finish(5s));
  p.write_end.reset();
  EXPECT_EQ(read_all(p.read_end.get()), "a\nb\nc\nd\ne\nf\n");
  const OutputStats s = writer.stats();
  EXPECT_EQ(s.lines_written, 6u);
  EXPECT_EQ(s.bytes_written, 12u);
  EXPECT_EQ(s.lines_dropped_queue_full, 0u);
  EXPECT_EQ(s.lines_dropped_write_error, 0u);
  EXPECT_EQ(s.queued_bytes, 0u);
}

TEST_F(LineWriterTest, SubmitTakesTheBatchContents) {
  Pipe p = make_pipe();
  LineWriter writer(p.write_end.get(), 1 << 20);
  std::string batch = "x\n";
  ASSERT_TRUE(writer.submit(batch, 1));
  EXPECT_TRUE(batch.empty());
  EXPECT_TRUE(writer.finish(5s));
}

// Has a writer of `capacity` bytes write `batches` batches of kSpareTestBatchBytes capacity
// (one line each), waits `idle`, then counts how many of the next submits hand back one of those
// batches (a spare) before one hands back a batch never written (fresh).
constexpr size_t kSpareTestBatchBytes = 64 * 1024;

size_t spares_handed_back(size_t capacity, size_t batches, std::chrono::milliseconds idle) {
  const std::string line = std::string(100, 'x') + "\n";
  Pipe p = make_pipe();
  LineWriter writer(p.write_end.get(), capacity);
  std::vector<std::string> held;  // kept alive, so that no address is handed out twice
  auto fresh = [] {
    std::string batch;
    batch.reserve(kSpareTestBatchBytes);
    return batch;
  };
  // Stall the writer on a full pipe (it takes the first batch and blocks), queue the rest, then
  // let it write them all.
  const size_t prefill = fill_pipe(p.write_end.get());
  std::vector<const char*> written;
  for (size_t i = 0; i < batches; ++i) {
    std::string batch = fresh();
    batch = line;
    written.push_back(batch.data());
    EXPECT_TRUE(writer.submit(batch, 1));
    EXPECT_TRUE(batch.empty());
    if (i == 0) {
      EXPECT_TRUE(queue_empties(writer));
    }
    held.push_back(std::move(batch));  // fresh: nothing was written yet
  }
  const size_t total = prefill + batches * line.size();
  EXPECT_EQ(read_exactly(p.read_end.get(), total).size(), total);
  EXPECT_TRUE(eventually([&] { return writer.stats().lines_written == batches; }));
  std::this_thread::sleep_for(idle);
  // Stall it again: each submit now hands back a spare until they run out.
  EXPECT_GT(fill_pipe(p.write_end.get()), 0u);
  size_t spares = 0;
  for (;;) {
    std::string batch = fresh();
    batch = line;
    EXPECT_TRUE(writer.submit(batch, 1));
    EXPECT_GE(batch.capacity(), kSpareTestBatchBytes);
    const bool spare = std::find(written.begin(), written.end(), batch.data()) != written.end();
    held.push_back(std::move(batch));
    if (!spare || spares > batches) break;
    ++spares;
  }
  EXPECT_TRUE(finish_with_reader(writer, p));
  return spares;
}

// A written batch's memory comes back for the next one (already mapped and touched): all that
// the queue's capacity has room for, plus one (the queue's bound is the memory bound), and at
// most kSpareBatches after kSpareIdle without anything to write.
TEST_F(LineWriterTest, WrittenBatchesAreReusedWithinTheQueueCapacity) {
  constexpr size_t kBatches = LineWriter::kSpareBatches + 3;
  EXPECT_EQ(spares_handed_back(1 << 20, kBatches, 0ms), kBatches);
  // Room for 3.5 batches: 4 are kept (3 fit, and the 4th came back while the spares were within
  // the capacity).
  EXPECT_EQ(spares_handed_back(kSpareTestBatchBytes * 7 / 2, kBatches, 0ms), 4u);
  EXPECT_EQ(spares_handed_back(1 << 20, kBatches, LineWriter::kSpareIdle + 1500ms),
            LineWriter::kSpareBatches);
}

// Under a sustained backlog the queue is full whenever a written batch comes back (the polling
// thread refills it during the write): that batch is kept, and the next batch the queue takes
// hands it back instead of a fresh mapping.
TEST_F(LineWriterTest, ABatchWrittenWhileTheQueueIsFullIsReused) {
  constexpr size_t kBatch = 16 * 1024;  // each batch's size and capacity alike, as in a storm
  const std::string line = std::string(kBatch - 1, 'x') + "\n";
  Pipe p = make_pipe();
  // A pipe that holds one batch: the writer blocks in each write until the test reads.
  ASSERT_EQ(::fcntl(p.write_end.get(), F_SETPIPE_SZ, static_cast<int>(kBatch)),
            static_cast<int>(kBatch));
  LineWriter writer(p.write_end.get(), 3 * kBatch);  // the queue holds 3 batches
  // A batch is told apart by its capacity: a fresh one gets the capacity of the batch handed in.
  auto batch_with_capacity = [&](size_t capacity) {
    std::string batch;
    batch.reserve(capacity);
    batch = line;
    return batch;
  };
  constexpr size_t kFirstCapacity = kBatch + 64;
  constexpr size_t kOtherCapacity = kBatch + 32;
  // The writer blocked on the full pipe with the first batch, then the queue filled.
  const size_t prefill = fill_pipe(p.write_end.get());
  std::string batch = batch_with_capacity(kFirstCapacity);
  ASSERT_TRUE(writer.submit(batch, 1));
  ASSERT_TRUE(queue_empties(writer));
  for (int i = 0; i < 3; ++i) {
    batch = batch_with_capacity(kOtherCapacity);
    ASSERT_TRUE(writer.offer(batch, 1));
  }
  batch = batch_with_capacity(kOtherCapacity);
  ASSERT_FALSE(writer.offer(batch, 1));  // the queue is full
  // The first batch goes into the pipe (the queue still full when it comes back), the next one
  // is taken from the queue and blocks: the room it left takes the held batch.
  ASSERT_EQ(read_exactly(p.read_end.get(), prefill).size(), prefill);
  ASSERT_TRUE(eventually([&] { return writer.offer(batch, 1); }));
  EXPECT_EQ(batch.capacity(), kFirstCapacity) << "a fresh batch instead of the written one";
  EXPECT_TRUE(finish_with_reader(writer, p));
}

TEST_F(LineWriterTest, LargeBatchesExceedingThePipeArriveWhole) {
  Pipe p = make_pipe();
  std::string received;
  std::thread reader([&] { received = read_all(p.read_end.get()); });
  std::string expected;
  {
    LineWriter writer(p.write_end.get(), 8 << 20);
    for (int b = 0; b < 4; ++b) {
      std::string batch;
      for (int i = 0; i < 10000; ++i) {
        batch += "batch " + std::to_string(b) + " line " + std::to_string(i) + "\n";
      }
      expected += batch;
      ASSERT_TRUE(writer.submit(batch, 10000));
    }
    ASSERT_TRUE(writer.finish(10s));
    EXPECT_EQ(writer.stats().lines_written, 40000u);
    EXPECT_EQ(writer.stats().bytes_written, expected.size());
  }
  p.write_end.reset();
  reader.join();
  EXPECT_EQ(received, expected);
}

TEST_F(LineWriterTest, EmptyBatchIsAcceptedAndNotCounted) {
  Pipe p = make_pipe();
  LineWriter writer(p.write_end.get(), 16);
  std::string batch;
  EXPECT_TRUE(writer.submit(batch, 0));
  ASSERT_TRUE(writer.finish(5s));
  const OutputStats s = writer.stats();
  EXPECT_EQ(s.lines_written, 0u);
  EXPECT_EQ(s.lines_dropped_queue_full, 0u);
}

TEST_F(LineWriterTest, BatchLargerThanQueueGoesWhenNothingWaits) {
  // One poll round may produce more than the whole queue holds: with nothing waiting it is
  // written whole rather than lost.
  Pipe p = make_pipe();
  LineWriter writer(p.write_end.get(), 8);
  std::string batch = "one\ntwo\nthree\n";
  EXPECT_TRUE(writer.submit(batch, 3));
  EXPECT_TRUE(batch.empty());
  ASSERT_TRUE(writer.finish(5s));
  p.write_end.reset();
  EXPECT_EQ(read_all(p.read_end.get()), "one\ntwo\nthree\n");
  EXPECT_EQ(writer.stats().lines_written, 3u);
  EXPECT_EQ(writer.stats().lines_dropped_queue_full, 0u);
}

TEST_F(LineWriterTest, BatchLargerThanQueueIsDroppedCountedAndClearedWhenOthersWait) {
  Pipe p = make_pipe();
  fill_pipe(p.write_end.get());
  LineWriter writer(p.write_end.get(), 8);
  ASSERT_NO_FATAL_FAILURE(block_with_one_queued(writer));
  std::string batch = "one\ntwo\nthree\n";  // 5 + 14 > 8 while something waits: dropped
  EXPECT_FALSE(writer.submit(batch, 3));
  EXPECT_TRUE(batch.empty());
  EXPECT_EQ(writer.stats().lines_dropped_queue_full, 3u);
  EXPECT_TRUE(finish_with_reader(writer, p));
  EXPECT_EQ(writer.stats().lines_written, 2u);
  EXPECT_EQ(writer.stats().lines_dropped_write_error, 0u);
}

TEST_F(LineWriterTest, OfferHandsBackWhatDoesNotFitWithoutCounting) {
  Pipe p = make_pipe();
  fill_pipe(p.write_end.get());
  LineWriter writer(p.write_end.get(), 8);
  ASSERT_NO_FATAL_FAILURE(block_with_one_queued(writer));
  std::string batch = "one\ntwo\nthree\n";  // 5 + 14 > 8 while something waits
  EXPECT_FALSE(writer.offer(batch, 3));
  EXPECT_EQ(batch, "one\ntwo\nthree\n");  // left to the caller, neither queued nor counted
  EXPECT_EQ(writer.stats().lines_dropped_queue_full, 0u);
  EXPECT_EQ(writer.stats().queued_bytes, 5u);
  std::string small = "ok\n";  // 5 + 3 <= 8: taken
  EXPECT_TRUE(writer.offer(small, 1));
  EXPECT_TRUE(small.empty());
  writer.drop(batch, 3);  // the caller gives up on it: counted as a full queue's loss
  EXPECT_TRUE(batch.empty());
  EXPECT_EQ(writer.stats().lines_dropped_queue_full, 3u);
  EXPECT_TRUE(finish_with_reader(writer, p));
  EXPECT_EQ(writer.stats().lines_written, 3u);
}

TEST_F(LineWriterTest, WaitForRoomReturnsOnceTheWriterTakesTheQueue) {
  Pipe p = make_pipe();
  fill_pipe(p.write_end.get());
  LineWriter writer(p.write_end.get(), 8);
  ASSERT_NO_FATAL_FAILURE(block_with_one_queued(writer));
  // Nobody reads: no room for 14 bytes within the timeout.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(writer.wait_for_room(14, 100ms));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 80ms);
  // A reader unblocks the writer, which takes the waiting batch: the queue is empty, and an
  // empty queue takes any batch.
  std::thread reader([&] { (void)read_all(p.read_end.get()); });
  EXPECT_TRUE(writer.wait_for_room(14, 5s));
  std::string batch = "one\ntwo\nthree\n";
  EXPECT_TRUE(writer.offer(batch, 3));
  EXPECT_TRUE(finish_read_by(writer, p, reader));
  EXPECT_EQ(writer.stats().lines_written, 5u);
  EXPECT_EQ(writer.stats().lines_dropped_queue_full, 0u);
}

TEST_F(LineWriterTest, OfferAfterAWriteErrorDropsAndCountsIt) {
  Pipe p = make_pipe();
  LineWriter writer(p.write_end.get(), 1 << 20);
  p.read_end.reset();  // EPIPE from now on
  std::string batch = "a\n";
  EXPECT_TRUE(writer.offer(batch, 1));
  ASSERT_TRUE(eventually([&] { return writer.stats().lines_dropped_write_error == 1; }));
  batch = "b\nc\n";
  EXPECT_TRUE(writer.offer(batch, 2));  // taken, never held: the output is gone for good
  EXPECT_TRUE(batch.empty());
  EXPECT_EQ(writer.stats().lines_dropped_write_error, 3u);
  EXPECT_TRUE(writer.wait_for_room(1 << 30, 0ms));
}

TEST_F(LineWriterTest, DrainingSubmitWaitsForRoomInsteadOfDropping) {
  Pipe p = make_pipe();
  fill_pipe(p.write_end.get());
  LineWriter writer(p.write_end.get(), 8);
  ASSERT_NO_FATAL_FAILURE(block_with_one_queued(writer));
  writer.drain_until(std::chrono::steady_clock::now() + 10s);
  // The reader starts late: the submit below must wait for it, not drop.
  std::thread reader([&] {
    std::this_thread::sleep_for(200ms);
    (void)read_all(p.read_end.get());
  });
  std::string batch = "one\ntwo\nthree\n";  // 5 + 14 > 8 while something waits
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(writer.submit(batch, 3));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 100ms);
  EXPECT_TRUE(finish_read_by(writer, p, reader));
  EXPECT_EQ(writer.stats().lines_written, 5u);
  EXPECT_EQ(writer.stats().lines_dropped_queue_full, 0u);
}

TEST_F(LineWriterTest, DrainingSubmitDropsAtTheDeadline) {
  Pipe p = make_pipe();
  fill_pipe(p.write_end.get());
  LineWriter writer(p.write_end.get(), 8);
  ASSERT_NO_FATAL_FAILURE(block_with_one_queued(writer));
  writer.drain_until(std::chrono::steady_clock::now() + 200ms);
  std::string batch = "one\ntwo\nthree\n";  // nobody reads: no room before the deadline
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(writer.submit(batch, 3));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
  EXPECT_TRUE(batch.empty());
  EXPECT_EQ(writer.stats().lines_dropped_queue_full, 3u);
  EXPECT_TRUE(finish_with_reader(writer, p));
  EXPECT_EQ(writer.stats().lines_written, 2u);
}

TEST_F(LineWriterTest, PendingBytesCountAgainstCapacity) {
  Pipe p = make_pipe();
  const size_t prefill = fill_pipe(p.write_end.get());
  LineWriter writer(p.write_end.get(), 10);
  std::string batch = "in-flight\n";  // taken by the thread, blocked on the full pipe
  ASSERT_TRUE(writer.submit(batch, 1));
  ASSERT_TRUE(queue_empties(writer));
  batch = "1234567\n";  // 8 bytes: waits in the queue
  ASSERT_TRUE(writer.submit(batch, 1));
  batch = "abc\n";  // 8 + 4 > 10
  EXPECT_FALSE(writer.submit(batch, 1));
  EXPECT_EQ(writer.stats().lines_dropped_queue_full, 1u);
  EXPECT_EQ(writer.stats().queued_bytes, 8u);
  // Unblock: read the prefill and the batches, then finish cleanly.
  EXPECT_TRUE(finish_with_reader(writer, p));
  EXPECT_EQ(writer.stats().lines_written, 2u);
  EXPECT_GT(prefill, 0u);
}

TEST_F(LineWriterTest, ClosedReaderCountsWriteErrorsWithoutCrashing) {
  Pipe p = make_pipe();
  p.read_end.reset();
  LineWriter writer(p.write_end.get(), 1 << 20);
  std::string batch = "a\nb\n";
  ASSERT_TRUE(writer.submit(batch, 2));
  ASSERT_TRUE(eventually([&] { return writer.stats().lines_dropped_write_error == 2; }));
  // Once the output failed, later batches are dropped and counted as write errors too.
  batch = "c\nd\ne\n";
  EXPECT_FALSE(writer.submit(batch, 3));
  EXPECT_TRUE(batch.empty());
  EXPECT_TRUE(writer.finish(5s));
  const OutputStats s = writer.stats();
  EXPECT_EQ(s.lines_dropped_write_error, 5u);
  EXPECT_EQ(s.lines_written, 0u);
  EXPECT_EQ(s.bytes_written, 0u);
  EXPECT_EQ(s.lines_dropped_queue_full, 0u);
}

TEST_F(LineWriterTest, SubmitAfterFinishIsDroppedAndCounted) {
  Pipe p = make_pipe();
  LineWriter writer(p.write_end.get(), 1 << 20);
  ASSERT_TRUE(writer.finish(5s));
  std::string batch = "late\n";
  EXPECT_FALSE(writer.submit(batch, 1));
  EXPECT_EQ(writer.stats().lines_dropped_queue_full, 1u);
  EXPECT_TRUE(writer.finish(5s));  // second finish: nothing to stop
}

TEST_F(LineWriterTest, FinishWithBlockedOutputTimesOutAndCountsPending) {
  // Intentionally leaked (kept reachable for LeakSanitizer): after finish() returns false the
  // writer thread is detached and still blocked in write(2) on this pipe, so neither the writer
  // nor the pipe may be destroyed.
  struct Leaked {
    Pipe fds;
    std::unique_ptr<LineWriter> writer;
  };
  static auto* const leaked = new std::vector<Leaked*>;
  auto* l = leaked->emplace_back(new Leaked{make_pipe(), nullptr});
  fill_pipe(l->fds.write_end.get());
  l->writer = std::make_unique<LineWriter>(l->fds.write_end.get(), 1 << 20);
  LineWriter* writer = l->writer.get();
  std::string batch = "first\n";
  ASSERT_TRUE(writer->submit(batch, 1));
  batch = "second\nthird\n";
  ASSERT_TRUE(writer->submit(batch, 2));
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(writer->finish(200ms));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_GE(elapsed, 200ms);
  EXPECT_LT(elapsed, 3s);
  const OutputStats s = writer->stats();
  EXPECT_EQ(s.lines_written, 0u);
  // The queued batch ("second", "third") is dropped now; the batch blocked in write(2) is
  // counted once, when that write ends.
  EXPECT_EQ(s.lines_dropped_queue_full, 2u);
  EXPECT_EQ(s.queued_bytes, 0u);
  // Closing the read end fails the blocked write (EPIPE; SIGPIPE is ignored), so the detached
  // thread ends and counts the in-flight line as a write error, exactly once.
  l->fds.read_end.reset();
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (writer->stats().lines_dropped_write_error == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  const OutputStats after = writer->stats();
  EXPECT_EQ(after.lines_dropped_write_error, 1u);
  EXPECT_EQ(after.lines_dropped_queue_full, 2u);
  EXPECT_EQ(after.lines_written, 0u);
}

TEST_F(LineWriterTest, DestroyedWhileBlockedLeavesThreadSafe) {
  // The writer thread owns its state: destroying the LineWriter while the thread is blocked in
  // write(2) must not touch freed memory when the write later completes (ASan checks this).
  Pipe fds = make_pipe();
  fill_pipe(fds.write_end.get());
  {
    LineWriter writer(fds.write_end.get(), 1 << 20);
    std::string batch = "blocked\n";
    ASSERT_TRUE(writer.submit(batch, 1));
    std::this_thread::sleep_for(50ms);  // let the thread block in write(2)
  }
  // Unblock: drain the pipe so the thread's write completes after its LineWriter is gone.
  const size_t filler = fill_pipe_size();
  std::string got = read_exactly(fds.read_end.get(), filler + 8);
  EXPECT_EQ(got.substr(filler), "blocked\n");
}

// netmon_events_total{type} reads lines_written_by_kind: a line counts once written, by its
// kind, never when it is only queued, dropped at the full queue, or lost to a write error.
TEST_F(LineWriterTest, CountsLinesByKindOnlyOnceWritten) {
  Pipe p = make_pipe();
  fill_pipe(p.write_end.get());
  LineWriter writer(p.write_end.get(), 64);
  LineCount first;
  first.by_kind = {1, 0, 2, 0};
  std::string batch = "e\nc\nc\n";
  ASSERT_TRUE(writer.submit(batch, first));
  ASSERT_TRUE(queue_empties(writer));  // taken, blocked in write(2): not written yet
  LineCount second;
  second.by_kind = {0, 1, 0, 1};
  batch = "a\nf\n";
  ASSERT_TRUE(writer.submit(batch, second));
  LineCount dropped;
  dropped.by_kind = {0, 0, 40, 0};
  batch = std::string(80, 'x');  // does not fit behind the queued batch
  EXPECT_FALSE(writer.submit(batch, dropped));
  OutputStats s = writer.stats();
  EXPECT_EQ(s.lines_written, 0u);
  EXPECT_EQ(s.lines_written_by_kind, (std::array<uint64_t, kLineKinds>{0, 0, 0, 0}));
  EXPECT_EQ(s.lines_dropped_queue_full, 40u);
  EXPECT_TRUE(finish_with_reader(writer, p));
  s = writer.stats();
  EXPECT_EQ(s.lines_written, 5u);
  EXPECT_EQ(s.lines_written_by_kind, (std::array<uint64_t, kLineKinds>{1, 1, 2, 1}));
  EXPECT_EQ(s.output_errno, 0);
}

TEST_F(LineWriterTest, WriteErrorIsReportedWithItsErrno) {
  Pipe p = make_pipe();
  LineWriter writer(p.write_end.get(), 1 << 20);
  EXPECT_EQ(writer.output_error(), 0);
  p.read_end.reset();
  LineCount lines;
  lines.by_kind = {0, 0, 2, 0};
  std::string batch = "a\nb\n";
  ASSERT_TRUE(writer.submit(batch, lines));
  ASSERT_TRUE(eventually([&] { return writer.output_error() != 0; }));
  EXPECT_EQ(writer.output_error(), EPIPE);
  EXPECT_EQ(writer.stats().output_errno, EPIPE);
  EXPECT_EQ(writer.stats().lines_written_by_kind, (std::array<uint64_t, kLineKinds>{}));
  EXPECT_EQ(writer.stats().lines_dropped_write_error, 2u);
}

// An idle agent whose stdout reader is gone finds out without writing: poll(2) reports POLLERR
// on a pipe's write end once no reader is left.
TEST_F(LineWriterTest, CheckOutputFindsAGoneReaderWithoutWriting) {
  Pipe p = make_pipe();
  LineWriter writer(p.write_end.get(), 1 << 20);
  EXPECT_EQ(writer.check_output(), 0);  // a reader: fine
  p.read_end.reset();
  EXPECT_EQ(writer.check_output(), EPIPE);
  EXPECT_EQ(writer.output_error(), EPIPE);
  std::string batch = "late\n";
  EXPECT_TRUE(writer.offer(batch, 1));  // dropped and counted: the output is gone for good
  EXPECT_EQ(writer.stats().lines_dropped_write_error, 1u);
  EXPECT_TRUE(writer.finish(5s));
  EXPECT_EQ(writer.stats().lines_written, 0u);
}

TEST_F(LineWriterTest, CheckOutputLeavesAWorkingOutputAlone) {
  UniqueFd null(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(null.get() >= 0);
  LineWriter writer(null.get(), 1 << 20);
  EXPECT_EQ(writer.check_output(), 0);
  std::string batch = "a\n";
  ASSERT_TRUE(writer.submit(batch, 1));
  EXPECT_TRUE(writer.finish(5s));
  EXPECT_EQ(writer.stats().lines_written, 1u);
  EXPECT_EQ(writer.check_output(), 0);
}

// A stdout set O_NONBLOCK (its file description may be shared with another process) that is
// full returns EAGAIN: the writer waits for room as a blocking write would, and fails nothing.
TEST_F(LineWriterTest, NonBlockingOutputThatIsFullIsWaitedFor) {
  Pipe p = make_pipe();
  const size_t prefill = fill_pipe(p.write_end.get());
  ASSERT_EQ(fcntl(p.write_end.get(), F_SETFL, fcntl(p.write_end.get(), F_GETFL) | O_NONBLOCK), 0);
  LineWriter writer(p.write_end.get(), 1 << 20);
  std::string batch = "after-the-prefill\n";
  ASSERT_TRUE(writer.submit(batch, 1));
  ASSERT_TRUE(queue_empties(writer));
  std::this_thread::sleep_for(50ms);  // let it meet EAGAIN
  EXPECT_EQ(writer.output_error(), 0);
  std::string got;
  std::thread reader([&] { got = read_exactly(p.read_end.get(), prefill + 18); });
  ASSERT_TRUE(eventually([&] { return writer.stats().lines_written == 1; }));
  reader.join();
  EXPECT_EQ(got.substr(prefill), "after-the-prefill\n");
  EXPECT_EQ(writer.output_error(), 0);
  EXPECT_EQ(writer.stats().lines_dropped_write_error, 0u);
  EXPECT_TRUE(writer.finish(5s));
}

// A stop whose output cannot drain in time: the batch being written is cut at a line end, so a
// reader that keeps reading never sees part of a line, and the counts stay exact: the lines
// before the cut are written (by kind, from the classifier), the rest and the queue dropped.
TEST_F(LineWriterTest, AStopThatCannotDrainCutsTheBatchAtALineEnd) {
  Pipe p = make_pipe();
  constexpr size_t kLines = 4000;
  constexpr size_t kLineBytes = 100;  // 400 KB: far more than the pipe holds
  LineWriter writer(p.write_end.get(), 8 << 20,
                    [](std::string_view line) { return static_cast<size_t>(line.front() - 'a'); });
  std::string batch;
  LineCount lines;
  for (size_t i = 0; i < kLines; ++i) {
    const char kind = static_cast<char>('a' + i % kLineKinds);
    batch += std::string(kLineBytes - 1, kind) + "\n";
    ++lines.by_kind[i % kLineKinds];
  }
  writer.drain_until(std::chrono::steady_clock::now());  // stopping, as the agent does first
  ASSERT_TRUE(writer.submit(batch, lines));
  ASSERT_TRUE(queue_empties(writer));  // taken: its thread blocks once the pipe is full
  std::string queued = "queued\n";
  ASSERT_TRUE(writer.submit(queued, 1));
  // The reader starts once finish() has given up (it counts the queued line as dropped just
  // before it asks the writer to stop at a line end), and then reads to the end.
  std::string got;
  std::thread reader([&] {
    ASSERT_TRUE(eventually([&] { return writer.stats().lines_dropped_queue_full == 1; }));
    got = read_all(p.read_end.get());
  });
  EXPECT_FALSE(writer.finish(1ms));
  p.write_end.reset();
  reader.join();
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back(), '\n');
  EXPECT_EQ(got.size() % kLineBytes, 0u) << "a line was cut";
  const OutputStats stats = writer.stats();
  EXPECT_EQ(stats.lines_written, got.size() / kLineBytes);
  EXPECT_LT(stats.lines_written, kLines);
  EXPECT_EQ(stats.lines_written + stats.lines_dropped_queue_full, kLines + 1);
  EXPECT_EQ(stats.bytes_written, got.size());
  for (size_t k = 0; k < kLineKinds; ++k) {
    const auto in_output =
        static_cast<uint64_t>(std::count(got.begin(), got.end(), static_cast<char>('a' + k))) /
        (kLineBytes - 1);
    EXPECT_EQ(stats.lines_written_by_kind[k], in_output) << k;
  }
}

}  // namespace
}  // namespace netmon

namespace netmon {
namespace {

TEST(WidenPipe, APipeGrowsToTheSizeAskedOrTheSystemLimit) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  UniqueFd r(fds[0]), w(fds[1]);
  const int before = ::fcntl(w.get(), F_GETPIPE_SZ);
  ASSERT_GT(before, 0);
  const size_t size = widen_pipe(w.get(), size_t{1} << 20);
  EXPECT_EQ(static_cast<int>(size), ::fcntl(w.get(), F_GETPIPE_SZ));
  EXPECT_GE(size, static_cast<size_t>(before));
  // Never smaller than asked unless the system limit is smaller (1 MiB by default).
  if (size < (size_t{1} << 20)) {
    std::FILE* f = std::fopen("/proc/sys/fs/pipe-max-size", "r");
    ASSERT_NE(f, nullptr);
    unsigned long limit = 0;
    ASSERT_EQ(std::fscanf(f, "%lu", &limit), 1);
    std::fclose(f);
    EXPECT_LE(limit, size_t{1} << 20);
  }
  // Asking for less than it has leaves it as it is.
  EXPECT_EQ(widen_pipe(w.get(), 4096), size);
}

TEST(WidenPipe, AnythingElseIsLeftAlone) {
  UniqueFd file(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(file.valid());
  EXPECT_EQ(widen_pipe(file.get(), size_t{1} << 20), 0u);
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  EXPECT_EQ(widen_pipe(a.get(), size_t{1} << 20), 0u);
}

}  // namespace
}  // namespace netmon
