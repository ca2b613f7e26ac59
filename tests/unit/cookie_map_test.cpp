#include "common/cookie_map.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <unordered_map>
#include <vector>

namespace netmon {
namespace {

TEST(CookieMap, FindsWhatWasAddedAndNothingElse) {
  CookieMap<int> map;
  EXPECT_EQ(map.find(7), nullptr);
  bool added = false;
  *map.find_or_add(7, added) = 70;
  EXPECT_TRUE(added);
  int* again = map.find_or_add(7, added);
  EXPECT_FALSE(added);
  EXPECT_EQ(*again, 70);
  ASSERT_NE(map.find(7), nullptr);
  EXPECT_EQ(*map.find(7), 70);
  EXPECT_EQ(map.find(8), nullptr);
  EXPECT_EQ(map.size(), 1u);
}

TEST(CookieMap, CookieZeroIsNeverStored) {
  CookieMap<int> map;
  bool added = true;
  EXPECT_EQ(map.find_or_add(0, added), nullptr);
  EXPECT_FALSE(added);
  EXPECT_EQ(map.find(0), nullptr);
  int taken = 0;
  EXPECT_FALSE(map.take(0, taken));
  EXPECT_EQ(map.size(), 0u);
}

TEST(CookieMap, TakeMovesTheValueOutAndRemovesIt) {
  CookieMap<int> map;
  bool added = false;
  *map.find_or_add(5, added) = 50;
  int out = 0;
  EXPECT_TRUE(map.take(5, out));
  EXPECT_EQ(out, 50);
  EXPECT_FALSE(map.take(5, out));
  EXPECT_EQ(map.find(5), nullptr);
  EXPECT_EQ(map.size(), 0u);
}

// Random inserts, lookups and removals of consecutive and scattered cookies, checked step by step
// against std::unordered_map: the backward shift of a removal keeps every other entry findable,
// across growth and wrap-around of the probe runs.
TEST(CookieMap, AgreesWithAnUnorderedMapUnderRandomOperations) {
  CookieMap<uint64_t> map;
  std::unordered_map<uint64_t, uint64_t> expected;
  std::mt19937_64 random(42);
  uint64_t next_cookie = 1000;
  for (int step = 0; step < 200000; ++step) {
    const unsigned op = random() % 10;
    // Mostly consecutive cookies (as the kernel hands them out), some far apart.
    uint64_t cookie = random() % 4 == 0 ? 1 + random() % 5000 : next_cookie - random() % 64;
    if (op < 5) {
      if (expected.size() >= 3000) continue;
      cookie = random() % 4 == 0 ? 1 + random() % 5000 : next_cookie++;
      bool added = false;
      uint64_t* value = map.find_or_add(cookie, added);
      ASSERT_NE(value, nullptr);
      EXPECT_EQ(added, expected.count(cookie) == 0) << cookie;
      *value = cookie * 3 + static_cast<uint64_t>(step);
      expected[cookie] = *value;
    } else if (op < 8) {
      uint64_t out = 0;
      const bool had = expected.erase(cookie) == 1;
      EXPECT_EQ(map.take(cookie, out), had) << cookie;
    } else {
      const auto it = expected.find(cookie);
      uint64_t* value = map.find(cookie);
      ASSERT_EQ(value != nullptr, it != expected.end()) << cookie;
      if (value) {
        EXPECT_EQ(*value, it->second);
      }
    }
    ASSERT_EQ(map.size(), expected.size());
  }
  for (const auto& [cookie, value] : expected) {
    ASSERT_NE(map.find(cookie), nullptr) << cookie;
    EXPECT_EQ(*map.find(cookie), value);
  }
  EXPECT_GE(map.capacity(), 2 * expected.size());
}

// A probe run that wraps from the last slot to the first: removing its first entry shifts back the
// entries whose home lies before the hole (cyclically), and leaves one at its own home in slot 0.
TEST(CookieMap, RemovalKeepsAWrappedRunFindable) {
  constexpr size_t kSlots = 1024;  // the initial table
  auto cookies_at = [](size_t home, size_t n, uint64_t from) {
    std::vector<uint64_t> found;
    for (uint64_t c = from; found.size() < n; ++c) {
      if (CookieMap<int>::home_slot(c, kSlots) == home) found.push_back(c);
    }
    return found;
  };
  const std::vector<uint64_t> end = cookies_at(kSlots - 2, 3, 1);  // slots 1022, 1023, then 1
  const uint64_t zero = cookies_at(0, 1, 1)[0];                    // slot 0, its home
  CookieMap<int> map;
  bool added = false;
  *map.find_or_add(end[0], added) = 1;
  *map.find_or_add(end[1], added) = 2;
  *map.find_or_add(zero, added) = 3;
  *map.find_or_add(end[2], added) = 4;
  ASSERT_EQ(map.capacity(), kSlots);
  int taken = 0;
  EXPECT_TRUE(map.take(end[0], taken));
  EXPECT_EQ(taken, 1);
  ASSERT_NE(map.find(end[1]), nullptr);
  EXPECT_EQ(*map.find(end[1]), 2);
  ASSERT_NE(map.find(zero), nullptr);
  EXPECT_EQ(*map.find(zero), 3);
  ASSERT_NE(map.find(end[2]), nullptr);
  EXPECT_EQ(*map.find(end[2]), 4);
  EXPECT_EQ(map.size(), 3u);
}

TEST(CookieMap, GrowsWhenHalfFullAndKeepsEverything) {
  CookieMap<int> map;
  bool added = false;
  for (uint64_t c = 1; c <= 600; ++c) *map.find_or_add(c, added) = static_cast<int>(c);
  EXPECT_EQ(map.capacity(), 2048u);  // 1024 slots hold 512 at most
  for (uint64_t c = 1; c <= 600; ++c) {
    ASSERT_NE(map.find(c), nullptr);
    EXPECT_EQ(*map.find(c), static_cast<int>(c));
  }
}

}  // namespace
}  // namespace netmon
