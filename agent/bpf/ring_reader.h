// Reads the kernel's ring buffer (the "events" map) and hands each record to a RecordSink; tells
// how full the buffer is. Maps the buffer's data area once (RingRecords), where libbpf's reader
// maps it twice. No libbpf type in this header.
#pragma once

#include <cstdint>
#include <memory>

#include "bpf/probe.h"
#include "bpf/ring_records.h"
#include "common/result.h"

namespace netmon {

class RingReader {
 public:
  // Reads the ring buffer map `map_fd` of `size` bytes (a power of two, at least a page) into
  // `sink` (which must outlive the reader). The map must outlive the reader too.
  static Result<std::unique_ptr<RingReader>> open(int map_fd, uint64_t size, RecordSink& sink);
  ~RingReader();
  RingReader(const RingReader&) = delete;
  RingReader& operator=(const RingReader&) = delete;

  // Waits up to `timeout_ms` for a wakeup (none when records wait already), then delivers every
  // record available to the sink, or those up to the one after which the sink asked to stop (the
  // rest stays for the next poll). Returns the number delivered.
  Result<int> poll(int timeout_ms);

  // The fill level, read from the buffer's producer and consumer positions.
  RingFill fill() const;

 private:
  class Mapping;
  RingReader(int map_fd, RecordSink& sink, std::unique_ptr<Mapping> mapping);

  int map_fd_;
  RecordSink& sink_;
  std::unique_ptr<Mapping> mapping_;
  RingRecords records_;
};

}  // namespace netmon
