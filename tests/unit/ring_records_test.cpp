// RingRecords on memory laid out as the kernel lays out a BPF ring buffer: the records' headers,
// their flag bits, their 8-byte alignment, positions that count past the size, and records that
// cross the data area's end (which the agent maps once, not twice as libbpf does).
#include <gtest/gtest.h>
#include <linux/bpf.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "bpf/ring_records.h"

namespace netmon {
namespace {

constexpr uint64_t kSize = 4096;

// A producer writing records the way bpf_ringbuf_reserve() and _submit() / _discard() do.
class FakeRing {
 public:
  explicit FakeRing(uint64_t start = 0) : consumer_(start), producer_(start), data_(kSize) {}

  RingMemory memory() { return RingMemory{&consumer_, &producer_, data_.data(), kSize}; }

  // Reserves a record of `text` (busy until committed); returns its header's position.
  uint64_t reserve(const std::string& text) {
    const uint64_t at = producer_;
    write_u32(at, static_cast<uint32_t>(text.size()) | BPF_RINGBUF_BUSY_BIT);
    write_u32(at + 4, 0);
    for (size_t i = 0; i < text.size(); ++i) {
      data_[(at + BPF_RINGBUF_HDR_SZ + i) & (kSize - 1)] = static_cast<std::byte>(text[i]);
    }
    producer_ += (text.size() + BPF_RINGBUF_HDR_SZ + 7) & ~uint64_t{7};
    return at;
  }
  void commit(uint64_t at) { write_u32(at, read_u32(at) & ~BPF_RINGBUF_BUSY_BIT); }
  void discard(uint64_t at) {
    write_u32(at, (read_u32(at) & ~BPF_RINGBUF_BUSY_BIT) | BPF_RINGBUF_DISCARD_BIT);
  }
  uint64_t submit(const std::string& text) {
    const uint64_t at = reserve(text);
    commit(at);
    return at;
  }
  void write_u32(uint64_t at, uint32_t v) { std::memcpy(&data_[at & (kSize - 1)], &v, 4); }

  unsigned long consumer_;
  unsigned long producer_;

 private:
  uint32_t read_u32(uint64_t at) const {
    uint32_t v = 0;
    std::memcpy(&v, &data_[at & (kSize - 1)], 4);
    return v;
  }
  std::vector<std::byte> data_;
};

class Collect : public RecordSink {
 public:
  explicit Collect(size_t stop_after = SIZE_MAX) : stop_after_(stop_after) {}
  bool on_record(std::span<const std::byte> record) noexcept override {
    seen.emplace_back(reinterpret_cast<const char*>(record.data()), record.size());
    return seen.size() < stop_after_;
  }
  std::vector<std::string> seen;

 private:
  size_t stop_after_;
};

std::string text_of(size_t n, char first) {
  std::string s(n, ' ');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(first + i % 26);
  return s;
}

TEST(RingRecordsTest, DeliversCommittedRecordsInOrderAndMarksThemRead) {
  FakeRing ring;
  ring.submit("one");
  ring.submit("twelve bytes");
  ring.submit("");
  RingRecords records(ring.memory());
  EXPECT_EQ(records.fill().used, 16u + 24u + 8u);
  Collect sink;
  auto n = records.consume(sink);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  EXPECT_EQ(*n, 3);
  EXPECT_EQ(sink.seen, (std::vector<std::string>{"one", "twelve bytes", ""}));
  EXPECT_EQ(ring.consumer_, ring.producer_);
  EXPECT_EQ(records.fill().used, 0u);
  EXPECT_EQ(records.fill().size, kSize);
  EXPECT_EQ(*records.consume(sink), 0);
}

TEST(RingRecordsTest, ARecordThatCrossesTheEndIsDeliveredInOnePiece) {
  // Positions past several laps; the second record's data runs 100 bytes past the end.
  const uint64_t lap = 3 * kSize;
  const std::string first = text_of(kSize - 200 - BPF_RINGBUF_HDR_SZ, 'a');
  FakeRing ring(lap);
  ring.submit(first);  // ends 200 bytes before the end
  Collect sink;
  RingRecords records(ring.memory());
  ASSERT_TRUE(records.consume(sink).has_value());  // the producer may now write over it
  const std::string crossing = text_of(292, 'A');  // header at -200, data from -192 to +100
  ring.submit(crossing);
  const std::string after = "after the end";
  ring.submit(after);
  auto n = records.consume(sink);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  EXPECT_EQ(*n, 2);
  EXPECT_EQ(sink.seen, (std::vector<std::string>{first, crossing, after}));
  EXPECT_EQ(ring.consumer_, ring.producer_);
}

TEST(RingRecordsTest, ARecordWhoseHeaderEndsTheAreaStartsAtItsBeginning) {
  FakeRing ring;
  const std::string first = text_of(kSize - 2 * BPF_RINGBUF_HDR_SZ, 'a');
  ring.submit(first);  // the next header takes the last 8 bytes
  Collect sink;
  RingRecords records(ring.memory());
  ASSERT_TRUE(records.consume(sink).has_value());
  ring.submit("data at offset zero");
  ASSERT_TRUE(records.consume(sink).has_value());
  EXPECT_EQ(sink.seen, (std::vector<std::string>{first, "data at offset zero"}));
}

TEST(RingRecordsTest, StopsAtARecordStillBeingWrittenAndResumesOnceItIsCommitted) {
  FakeRing ring;
  ring.submit("before");
  const uint64_t busy = ring.reserve("busy");
  ring.submit("after");  // committed, but behind the busy one
  Collect sink;
  RingRecords records(ring.memory());
  EXPECT_EQ(*records.consume(sink), 1);
  EXPECT_EQ(ring.consumer_, busy);
  ring.commit(busy);
  EXPECT_EQ(*records.consume(sink), 2);
  EXPECT_EQ(sink.seen, (std::vector<std::string>{"before", "busy", "after"}));
}

TEST(RingRecordsTest, SkipsDiscardedRecords) {
  FakeRing ring;
  ring.discard(ring.reserve("dropped by the program"));
  ring.submit("kept");
  Collect sink;
  RingRecords records(ring.memory());
  EXPECT_EQ(*records.consume(sink), 1);
  EXPECT_EQ(sink.seen, (std::vector<std::string>{"kept"}));
  EXPECT_EQ(ring.consumer_, ring.producer_);
}

TEST(RingRecordsTest, StopsAfterTheRecordOnWhichTheSinkAskedToStop) {
  FakeRing ring;
  ring.submit("1");
  ring.submit("2");
  const uint64_t third = ring.submit("3");
  RingRecords records(ring.memory());
  Collect two(2);
  EXPECT_EQ(*records.consume(two), 2);
  EXPECT_EQ(ring.consumer_, third);  // the second one is read, the third is not
  Collect rest;
  EXPECT_EQ(*records.consume(rest), 1);
  EXPECT_EQ(rest.seen, (std::vector<std::string>{"3"}));
}

TEST(RingRecordsTest, AHeaderLongerThanTheAreaIsAnErrorAndNothingIsRead) {
  FakeRing ring;
  const uint64_t at = ring.submit("x");
  ring.write_u32(at, static_cast<uint32_t>(kSize));  // a length no kernel writes
  Collect sink;
  RingRecords records(ring.memory());
  auto n = records.consume(sink);
  ASSERT_FALSE(n.has_value());
  EXPECT_NE(n.error().message.find("4096"), std::string::npos) << n.error().message;
  EXPECT_TRUE(sink.seen.empty());
  EXPECT_EQ(ring.consumer_, at);
}

}  // namespace
}  // namespace netmon
