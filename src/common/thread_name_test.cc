#include "common/thread_name.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>

namespace edgestate {
namespace {

std::string NameIn(std::string_view name) {
  std::string seen;
  std::thread t([&] {
    NameThisThread(name);
    seen = ThisThreadName();
  });
  t.join();
  return seen;
}

TEST(ThreadName, TheCallingThreadTakesTheName) { EXPECT_EQ(NameIn("es-writer"), "es-writer"); }

TEST(ThreadName, NamesLongerThanLinuxKeepsAreCutToFifteenBytes) {
  EXPECT_EQ(NameIn("es-replication-0123"), "es-replication-");
  EXPECT_EQ(NameIn(""), "");
}

TEST(ThreadName, OtherThreadsKeepTheirNames) {
  NameThisThread("es-test-main");
  NameIn("es-other");
  EXPECT_EQ(ThisThreadName(), "es-test-main");
}

}  // namespace
}  // namespace edgestate
