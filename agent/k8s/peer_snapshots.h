// The current PeerIndex, published by the thread that builds it (k8s/peer_watch) and read by the
// pipeline. The pipeline checks version() (one relaxed-acquire load) for each event and calls
// load() (a short lock) only when it changed, then keeps its own shared_ptr: lookups on the
// event path neither lock nor allocate, and a snapshot lives as long as a reader holds it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>

#include "k8s/peer_index.h"

namespace netmon {

class PeerSnapshots {
 public:
  // Any thread. Each publish() makes version() change.
  void publish(std::shared_ptr<const PeerIndex> index) {
    std::lock_guard lock(mutex_);
    current_ = std::move(index);
    version_.store(version_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }
  // 0 until the first publish().
  uint64_t version() const noexcept { return version_.load(std::memory_order_acquire); }
  // The snapshot of version() (null before the first publish()).
  std::shared_ptr<const PeerIndex> load() const {
    std::lock_guard lock(mutex_);
    return current_;
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const PeerIndex> current_;  // guarded by mutex_
  std::atomic<uint64_t> version_{0};
};

}  // namespace netmon
