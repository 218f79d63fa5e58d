#include "storage/write_queue.h"

#include <gtest/gtest.h>

#include <thread>

namespace edgestate::storage {
namespace {

using Clock = std::chrono::steady_clock;

TEST(WriteQueueTest, PopAllTakesEverythingQueued) {
  WriteQueue<int> q;
  for (int i = 0; i < 5; ++i) {
    int v = i;
    ASSERT_TRUE(q.Push(std::move(v)));
  }
  std::vector<int> out;
  ASSERT_TRUE(q.PopAll(&out, Clock::now()));
  EXPECT_EQ(out, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(WriteQueueTest, ABoundedPopTakesTheOldestAndLeavesTheRestInOrder) {
  WriteQueue<int> q;
  for (int i = 0; i < 10; ++i) {
    int v = i;
    ASSERT_TRUE(q.Push(std::move(v)));
  }
  std::vector<int> out;
  ASSERT_TRUE(q.PopAll(&out, Clock::now(), 1, {}, 4));
  EXPECT_EQ(out, (std::vector<int>{0, 1, 2, 3}));
  int late = 10;
  ASSERT_TRUE(q.Push(std::move(late)));  // Behind what was already waiting.
  out.clear();
  ASSERT_TRUE(q.PopAll(&out, Clock::now(), 1, {}, 4));
  EXPECT_EQ(out, (std::vector<int>{4, 5, 6, 7}));
  out.clear();
  ASSERT_TRUE(q.PopAll(&out, Clock::now(), 1, {}, 4));
  EXPECT_EQ(out, (std::vector<int>{8, 9, 10}));
  q.Close();
  out.clear();
  EXPECT_FALSE(q.PopAll(&out, Clock::now(), 1, {}, 4));
}

TEST(WriteQueueTest, TimesOutEmpty) {
  WriteQueue<int> q;
  std::vector<int> out;
  EXPECT_TRUE(q.PopAll(&out, Clock::now() + std::chrono::milliseconds(1)));
  EXPECT_TRUE(out.empty());
}

TEST(WriteQueueTest, CloseDrainsThenStops) {
  WriteQueue<int> q;
  int v = 1;
  ASSERT_TRUE(q.Push(std::move(v)));
  q.Close();
  int w = 2;
  EXPECT_FALSE(q.Push(std::move(w)));
  std::vector<int> out;
  EXPECT_TRUE(q.PopAll(&out, Clock::now()));
  EXPECT_EQ(out.size(), 1u);
  out.clear();
  EXPECT_FALSE(q.PopAll(&out, Clock::time_point::max()));
}

TEST(WriteQueueTest, ManyProducersLoseNothing) {
  WriteQueue<int> q;
  constexpr int kThreads = 4, kEach = 20000;
  std::vector<std::thread> producers;
  for (int t = 0; t < kThreads; ++t) {
    producers.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        int v = 1;
        q.Push(std::move(v));
      }
    });
  }
  std::thread closer([&] {
    for (auto& p : producers) p.join();
    q.Close();
  });
  long total = 0;
  std::vector<int> out;
  while (q.PopAll(&out, Clock::now() + std::chrono::seconds(1))) {
    for (int v : out) total += v;
    out.clear();
  }
  closer.join();
  EXPECT_EQ(total, kThreads * kEach);
}

}  // namespace
}  // namespace edgestate::storage

namespace edgestate::storage {
namespace {

TEST(WriteQueueGatherTest, WaitsForGatherUntilLinger) {
  WriteQueue<int> q;
  int v = 1;
  ASSERT_TRUE(q.Push(std::move(v)));
  std::vector<int> out;
  auto start = Clock::now();
  ASSERT_TRUE(q.PopAll(&out, Clock::now() + std::chrono::seconds(5), /*gather=*/3,
                       std::chrono::microseconds(20000)));
  EXPECT_EQ(out.size(), 1u);  // Nobody else came: it committed alone after the linger.
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(15));
}

TEST(WriteQueueGatherTest, ReturnsAsSoonAsGatherIsReached) {
  WriteQueue<int> q;
  std::thread producer([&] {
    for (int i = 0; i < 3; ++i) {
      int v = i;
      q.Push(std::move(v));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  std::vector<int> out;
  auto start = Clock::now();
  ASSERT_TRUE(q.PopAll(&out, Clock::now() + std::chrono::seconds(60), /*gather=*/3,
                       std::chrono::seconds(60)));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(30));  // Did not sit out the linger.
  producer.join();
  EXPECT_EQ(out.size(), 3u);
}

}  // namespace
}  // namespace edgestate::storage
