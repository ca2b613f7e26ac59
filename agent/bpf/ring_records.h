// Walks the records of a BPF ring buffer's memory as its one consumer, without system calls: the
// kernel's layout (an 8-byte header per record, its length with a busy and a discard bit, records
// 8-byte aligned) on a data area mapped once. libbpf's reader maps the data area twice in a row so
// that a record crossing the end reads as one piece; that doubles the ring buffer's share of the
// agent's RSS (issue #23). Here a record that crosses the end is copied into a scratch buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "bpf/probe.h"
#include "common/result.h"

namespace netmon {

// Where a ring buffer's positions and data are: the consumer position (written by the consumer
// only), the producer position and the data area of `size` bytes, a power of two.
struct RingMemory {
  unsigned long* consumer = nullptr;
  const unsigned long* producer = nullptr;
  const std::byte* data = nullptr;
  uint64_t size = 0;
};

class RingRecords {
 public:
  explicit RingRecords(RingMemory memory) : memory_(memory) {}

  // Delivers every committed record to `sink`, in order, marking each read after the sink has
  // seen it; stops at a record still being written, or after the record on which the sink
  // returned false. Discarded records are skipped. Returns the number delivered, or an error for a
  // header no kernel writes (a length past the data area).
  Result<int> consume(RecordSink& sink);

  // Bytes written and not read yet.
  RingFill fill() const;

 private:
  RingMemory memory_;
  std::vector<std::byte> scratch_;  // a record that crosses the data area's end, in one piece
};

}  // namespace netmon
