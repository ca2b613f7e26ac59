// Counts the calls of the global operator new on the calling thread, for benchmarks that assert
// a path allocates nothing. Replaces operator new/delete (forwarding to malloc/free): include it
// in exactly one translation unit of a benchmark executable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace netmon::bench {
inline thread_local uint64_t g_new_calls = 0;
// operator new calls made by this thread so far.
inline uint64_t new_calls() { return g_new_calls; }
}  // namespace netmon::bench

// Not inlined: GCC would otherwise see free() on operator new's pointer at every call site
// (-Wmismatched-new-delete).
[[gnu::noinline]] void* operator new(std::size_t size) {
  ++netmon::bench::g_new_calls;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
