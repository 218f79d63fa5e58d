#include "common/handoff.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace edgestate {
namespace {

TEST(HandoffScopeTest, OutsideAScopeNothingIsDeferred) {
  bool ran = false;
  EXPECT_FALSE(HandoffScope::DeferWake(&ran, [&] { ran = true; }));
  EXPECT_FALSE(ran);
}

TEST(HandoffScopeTest, EachReceiverIsWokenOnceInFirstDeferredOrderAtTheOutermostEnd) {
  int a = 0, b = 0;
  std::vector<std::string> woken;
  {
    HandoffScope outer;
    EXPECT_TRUE(HandoffScope::DeferWake(&a, [&] { woken.push_back("a"); }));
    {
      HandoffScope inner;
      EXPECT_TRUE(HandoffScope::DeferWake(&b, [&] { woken.push_back("b"); }));
      EXPECT_TRUE(HandoffScope::DeferWake(&a, [&] { woken.push_back("a again"); }));
    }
    EXPECT_TRUE(woken.empty()) << "the inner scope's end must not wake anyone";
    EXPECT_TRUE(HandoffScope::DeferWake(&b, [&] { woken.push_back("b again"); }));
  }
  EXPECT_EQ(woken, (std::vector<std::string>{"a", "b"}));
  // The scope is over: the next hand-off is not deferred, and the list starts empty.
  EXPECT_FALSE(HandoffScope::DeferWake(&a, [] {}));
  {
    HandoffScope again;
    EXPECT_TRUE(HandoffScope::DeferWake(&a, [&] { woken.push_back("a later"); }));
  }
  EXPECT_EQ(woken.back(), "a later");
}

TEST(HandoffScopeTest, AWakeUpMayOpenAScopeOfItsOwn) {
  int a = 0, b = 0;
  std::vector<int> woken;
  {
    HandoffScope scope;
    HandoffScope::DeferWake(&a, [&] {
      woken.push_back(1);
      HandoffScope nested;
      HandoffScope::DeferWake(&b, [&] { woken.push_back(2); });
    });
  }
  EXPECT_EQ(woken, (std::vector<int>{1, 2}));
}

TEST(HandoffScopeTest, ScopesBelongToTheirThread) {
  int key = 0;
  HandoffScope scope;
  bool deferred_elsewhere = true;
  std::thread([&] { deferred_elsewhere = HandoffScope::DeferWake(&key, [] {}); }).join();
  EXPECT_FALSE(deferred_elsewhere);
  EXPECT_TRUE(HandoffScope::DeferWake(&key, [] {}));
}

}  // namespace
}  // namespace edgestate
