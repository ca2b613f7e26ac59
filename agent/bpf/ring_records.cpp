#include "bpf/ring_records.h"

#include <linux/bpf.h>

#include <cstring>
#include <span>
#include <string>

namespace netmon {

Result<int> RingRecords::consume(RecordSink& sink) {
  const uint64_t mask = memory_.size - 1;
  int delivered = 0;
  uint64_t consumed = __atomic_load_n(memory_.consumer, __ATOMIC_ACQUIRE);
  for (bool more = true; more;) {
    more = false;
    const uint64_t produced = __atomic_load_n(memory_.producer, __ATOMIC_ACQUIRE);
    while (consumed < produced) {
      const uint64_t at = consumed & mask;  // 8-byte aligned: a header never crosses the end
      const auto* header = reinterpret_cast<const uint32_t*>(memory_.data + at);
      const uint32_t word = __atomic_load_n(header, __ATOMIC_ACQUIRE);
      if (word & BPF_RINGBUF_BUSY_BIT) return delivered;  // reserved, not committed yet
      const uint64_t len = word & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);
      if (len + BPF_RINGBUF_HDR_SZ > memory_.size) {
        return fail("the ring buffer holds a record of " + std::to_string(len) +
                    " bytes, more than its " + std::to_string(memory_.size));
      }
      more = true;
      // The record's place: header and data, rounded up to 8 bytes (libbpf's roundup_len()).
      consumed += (len + BPF_RINGBUF_HDR_SZ + 7) & ~uint64_t{7};
      bool go_on = true;
      if (!(word & BPF_RINGBUF_DISCARD_BIT)) {
        const uint64_t start = (at + BPF_RINGBUF_HDR_SZ) & mask;
        std::span<const std::byte> record(memory_.data + start, len);
        if (start + len > memory_.size) {  // crosses the end: its tail is at the area's start
          const uint64_t head = memory_.size - start;
          scratch_.resize(len);
          std::memcpy(scratch_.data(), memory_.data + start, head);
          std::memcpy(scratch_.data() + head, memory_.data, len - head);
          record = std::span<const std::byte>(scratch_.data(), len);
        }
        ++delivered;
        go_on = sink.on_record(record);
      }
      // The kernel may reuse the record's bytes from here on.
      __atomic_store_n(memory_.consumer, consumed, __ATOMIC_RELEASE);
      if (!go_on) return delivered;
    }
  }
  return delivered;
}

RingFill RingRecords::fill() const {
  // The producer first: the consumer never passes it, so the difference cannot go negative.
  const uint64_t produced = __atomic_load_n(memory_.producer, __ATOMIC_ACQUIRE);
  const uint64_t consumed = __atomic_load_n(memory_.consumer, __ATOMIC_ACQUIRE);
  return RingFill{produced > consumed ? produced - consumed : 0, memory_.size};
}

}  // namespace netmon
