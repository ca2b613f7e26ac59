// CookieMap: a map from socket cookies (non-zero 64-bit keys) to small values, for the event
// path's per-connection state that lives from a connection's open to its close: one flat array
// with linear probing and backward-shift deletion, so that an insert or a removal allocates
// nothing (std::unordered_map allocates a node per insert and frees it per erase: two
// allocations per connection on the event path). It grows by doubling when half full and never
// shrinks; the caller bounds its size. Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "common/hash.h"

namespace netmon {

template <typename Value>
class CookieMap {
 public:
  // The value of `cookie`, or null. Cookie 0 is never stored.
  Value* find(uint64_t cookie) {
    const size_t i = index_of(cookie);
    return i == kNone ? nullptr : &slots_[i].value;
  }

  // The value of `cookie`, added (value-initialized) when absent; `added` says which. Cookie 0 is
  // refused (null).
  Value* find_or_add(uint64_t cookie, bool& added) {
    added = false;
    if (cookie == 0) return nullptr;
    if ((size_ + 1) * 2 > slots_.size()) grow();
    size_t i = home(cookie);
    for (; slots_[i].cookie != 0; i = next(i)) {
      if (slots_[i].cookie == cookie) return &slots_[i].value;
    }
    slots_[i].cookie = cookie;
    slots_[i].value = Value{};
    ++size_;
    added = true;
    return &slots_[i].value;
  }

  // Removes `cookie` and moves its value to `out`; whether it was there.
  bool take(uint64_t cookie, Value& out) {
    const size_t i = index_of(cookie);
    if (i == kNone) return false;
    out = std::move(slots_[i].value);
    erase_at(i);
    return true;
  }

  size_t size() const { return size_; }
  size_t capacity() const { return slots_.size(); }

  // Where `cookie`'s probe starts in a table of `slots` slots (a power of two); public for tests.
  static size_t home_slot(uint64_t cookie, size_t slots) {
    return static_cast<size_t>(splitmix64(cookie)) & (slots - 1);
  }

 private:
  struct Slot {
    uint64_t cookie = 0;  // 0: empty
    Value value{};
  };
  static constexpr size_t kInitialSlots = 1024;  // a power of two
  static constexpr size_t kNone = SIZE_MAX;

  size_t index_of(uint64_t cookie) const {
    if (cookie == 0 || slots_.empty()) return kNone;
    for (size_t i = home(cookie);; i = next(i)) {
      if (slots_[i].cookie == cookie) return i;
      if (slots_[i].cookie == 0) return kNone;
    }
  }

  void erase_at(size_t i) {
    // Backward shift: move each later entry of the run whose home is not between the hole and
    // itself into the hole, so that every entry stays reachable from its home without
    // tombstones.
    size_t hole = i;
    for (size_t j = next(i); slots_[j].cookie != 0; j = next(j)) {
      const size_t h = home(slots_[j].cookie);
      const bool stays = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
      if (stays) continue;
      slots_[hole] = std::move(slots_[j]);
      hole = j;
    }
    slots_[hole] = Slot{};
    --size_;
  }

  size_t home(uint64_t cookie) const { return home_slot(cookie, slots_.size()); }
  size_t next(size_t i) const { return (i + 1) & (slots_.size() - 1); }

  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? kInitialSlots : old.size() * 2, Slot{});
    for (Slot& s : old) {
      if (s.cookie == 0) continue;
      size_t i = home(s.cookie);
      while (slots_[i].cookie != 0) i = next(i);
      slots_[i] = std::move(s);
    }
  }

  std::vector<Slot> slots_;
  size_t size_ = 0;
};

}  // namespace netmon
