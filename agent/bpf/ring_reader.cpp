#include "bpf/ring_reader.h"

#include <bpf/libbpf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <span>
#include <string>

namespace netmon {
namespace {

// What a ring-buffer callback returns when the sink asked to stop: libbpf then marks the record
// read, stops, and returns this from ring_buffer__poll() or ring_buffer__consume().
constexpr int kSinkStopped = -ECANCELED;

std::string errno_text(int err) { return std::strerror(err < 0 ? -err : err); }

}  // namespace

// The ring buffer's consumer and producer positions: the first two pages of the map's memory,
// mapped read-only (libbpf maps the same pages for its reader) to tell how full the buffer is.
class RingReader::Positions {
 public:
  Positions(int map_fd, uint64_t size) : size_(size) {
    page_ = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    void* p = ::mmap(nullptr, 2 * page_, PROT_READ, MAP_SHARED, map_fd, 0);
    if (p != MAP_FAILED) {
      base_ = p;
    } else {
      error_ = errno;
    }
  }
  ~Positions() {
    if (base_) ::munmap(base_, 2 * page_);
  }
  Positions(const Positions&) = delete;
  Positions& operator=(const Positions&) = delete;

  bool mapped() const { return base_ != nullptr; }
  int error() const { return error_; }  // the mmap's errno when not mapped

  RingFill fill() const {  // only once mapped
    const auto* consumer = static_cast<const unsigned long*>(base_);
    const auto* producer =
        reinterpret_cast<const unsigned long*>(static_cast<const char*>(base_) + page_);
    // The producer first: the consumer never passes it, so the difference cannot go negative.
    const uint64_t produced = __atomic_load_n(producer, __ATOMIC_ACQUIRE);
    const uint64_t consumed = __atomic_load_n(consumer, __ATOMIC_ACQUIRE);
    return RingFill{produced > consumed ? produced - consumed : 0, size_};
  }

 private:
  void* base_ = nullptr;
  int error_ = 0;
  size_t page_ = 4096;
  uint64_t size_ = 0;
};

void RingReader::RingBufferDeleter::operator()(ring_buffer* rb) const { ring_buffer__free(rb); }

RingReader::RingReader(RecordSink& sink, std::unique_ptr<Positions> positions)
    : sink_(sink), positions_(std::move(positions)) {}

RingReader::~RingReader() = default;

Result<std::unique_ptr<RingReader>> RingReader::open(int map_fd, uint64_t size, RecordSink& sink) {
  std::unique_ptr<RingReader> reader(new RingReader(sink, nullptr));
  reader->ring_.reset(ring_buffer__new(map_fd, on_record, reader.get(), nullptr));
  if (!reader->ring_) return fail("creating the ring buffer reader failed: " + errno_text(errno));
  reader->positions_ = std::make_unique<Positions>(map_fd, size);
  if (!reader->positions_->mapped()) {
    return fail("mapping the ring buffer's positions failed: " +
                errno_text(reader->positions_->error()));
  }
  return reader;
}

int RingReader::on_record(void* ctx, void* data, size_t size) noexcept {
  auto* reader = static_cast<RingReader*>(ctx);
  ++reader->delivered_;
  const bool more = reader->sink_.on_record(
      std::span<const std::byte>(static_cast<const std::byte*>(data), size));
  return more ? 0 : kSinkStopped;
}

Result<int> RingReader::poll(int timeout_ms) {
  delivered_ = 0;
  const int n = ring_buffer__poll(ring_.get(), timeout_ms);
  if (n == kSinkStopped) return delivered_;
  if (n < 0 && n != -EINTR) return fail("polling the ring buffer failed: " + errno_text(n));
  // Records submitted without a wakeup do not end the wait: consume whatever is there.
  const int more = ring_buffer__consume(ring_.get());
  if (more < 0 && more != kSinkStopped) {
    return fail("reading the ring buffer failed: " + errno_text(more));
  }
  return delivered_;
}

RingFill RingReader::fill() const { return positions_->fill(); }

}  // namespace netmon
