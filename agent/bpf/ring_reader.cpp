#include "bpf/ring_reader.h"

#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace netmon {
namespace {

std::string errno_text(int err) { return std::strerror(err < 0 ? -err : err); }

}  // namespace

// The map's memory as the kernel lets a consumer map it: the consumer position's page read-write,
// and from the next page on the producer position's page and the data area, read-only, once.
class RingReader::Mapping {
 public:
  static Result<std::unique_ptr<Mapping>> map(int map_fd, uint64_t size) {
    const auto page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    if (size < page || (size & (size - 1)) != 0) {
      return fail("the ring buffer's size " + std::to_string(size) +
                  " is not a power of two of at least a page");
    }
    auto m = std::unique_ptr<Mapping>(new Mapping(page, size));
    void* consumer = ::mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
    if (consumer == MAP_FAILED) {
      const int err = errno;
      return fail("mapping the ring buffer's consumer page failed: " + errno_text(err), err);
    }
    m->consumer_ = consumer;
    void* producer = ::mmap(nullptr, m->producer_bytes(), PROT_READ, MAP_SHARED, map_fd,
                            static_cast<off_t>(page));
    if (producer == MAP_FAILED) {
      const int err = errno;
      return fail("mapping the ring buffer's data failed: " + errno_text(err), err);
    }
    m->producer_ = producer;
    return m;
  }
  ~Mapping() {
    if (producer_) ::munmap(producer_, producer_bytes());
    if (consumer_) ::munmap(consumer_, page_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  RingMemory memory() const {
    const auto* producer_page = static_cast<const std::byte*>(producer_);
    return RingMemory{static_cast<unsigned long*>(consumer_),
                      reinterpret_cast<const unsigned long*>(producer_page), producer_page + page_,
                      size_};
  }

 private:
  Mapping(size_t page, uint64_t size) : page_(page), size_(size) {}
  size_t producer_bytes() const { return page_ + size_; }

  size_t page_;
  uint64_t size_;
  void* consumer_ = nullptr;
  void* producer_ = nullptr;
};

RingReader::RingReader(int map_fd, RecordSink& sink, std::unique_ptr<Mapping> mapping)
    : map_fd_(map_fd), sink_(sink), mapping_(std::move(mapping)), records_(mapping_->memory()) {}

RingReader::~RingReader() = default;

Result<std::unique_ptr<RingReader>> RingReader::open(int map_fd, uint64_t size, RecordSink& sink) {
  auto mapping = Mapping::map(map_fd, size);
  if (!mapping) return tl::unexpected(mapping.error());
  return std::unique_ptr<RingReader>(new RingReader(map_fd, sink, std::move(*mapping)));
}

Result<int> RingReader::poll(int timeout_ms) {
  // The kernel reports the map readable while records wait, whether or not it sent a wakeup:
  // records submitted without one do not make the wait last its whole timeout.
  pollfd pfd{map_fd_, POLLIN, 0};
  if (::poll(&pfd, 1, timeout_ms) < 0 && errno != EINTR) {
    const int err = errno;
    return fail("polling the ring buffer failed: " + errno_text(err), err);
  }
  return records_.consume(sink_);
}

RingFill RingReader::fill() const { return records_.fill(); }

}  // namespace netmon
