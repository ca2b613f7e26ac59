// Reads the kernel's ring buffer (the "events" map) with libbpf's reader and hands each record to
// a RecordSink; tells how full the buffer is. No libbpf type in this header.
#pragma once

#include <cstdint>
#include <memory>

#include "bpf/probe.h"
#include "common/result.h"

struct ring_buffer;

namespace netmon {

class RingReader {
 public:
  // Reads the ring buffer map `map_fd` of `size` bytes into `sink` (which must outlive the
  // reader). The map must outlive the reader too.
  static Result<std::unique_ptr<RingReader>> open(int map_fd, uint64_t size, RecordSink& sink);
  ~RingReader();
  RingReader(const RingReader&) = delete;
  RingReader& operator=(const RingReader&) = delete;

  // Waits up to `timeout_ms` for a wakeup, then delivers every record available to the sink, or
  // those up to the one after which the sink asked to stop (the rest stays for the next poll).
  // Returns the number delivered.
  Result<int> poll(int timeout_ms);

  // The fill level, read from the buffer's producer and consumer positions.
  RingFill fill() const;

 private:
  class Positions;
  struct RingBufferDeleter {
    void operator()(ring_buffer* rb) const;
  };
  RingReader(RecordSink& sink, std::unique_ptr<Positions> positions);
  static int on_record(void* ctx, void* data, size_t size) noexcept;

  RecordSink& sink_;
  int delivered_ = 0;  // by the current poll
  std::unique_ptr<Positions> positions_;
  std::unique_ptr<ring_buffer, RingBufferDeleter> ring_;
};

}  // namespace netmon
