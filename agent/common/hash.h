// Hashing of 64-bit values for netmon's open-addressing tables (CookieMap, the edge cache).
#pragma once

#include <cstdint>

namespace netmon {

// splitmix64's finalizer: every bit of the result depends on every bit of `x`, so a table may
// take the low bits of it as a slot index even when the inputs come in runs of consecutive
// numbers (socket cookies) or share their low bits (pointers).
constexpr uint64_t splitmix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace netmon
