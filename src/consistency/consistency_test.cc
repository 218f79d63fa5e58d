#include "consistency/consistency.h"

#include <gtest/gtest.h>

namespace edgestate::consistency {
namespace {

Requested Ok(std::string_view target, std::string_view header = "", Level def = Level::kLocal) {
  auto r = ParseRequested(target, header, def);
  EXPECT_TRUE(r.ok()) << target << " | " << header << ": " << r.status().ToString();
  return r.ok() ? *r : Requested{};
}

std::string Err(std::string_view target, std::string_view header = "") {
  auto r = ParseRequested(target, header, Level::kLocal);
  EXPECT_FALSE(r.ok()) << target << " | " << header;
  return r.ok() ? "" : r.status().message();
}

TEST(ConsistencyTest, LevelsFromQueryHeaderOrDefault) {
  EXPECT_EQ(Ok("/read").level, Level::kLocal);
  EXPECT_EQ(Ok("/read", "", Level::kSession).level, Level::kSession);
  EXPECT_EQ(Ok("/read?consistency=session").level, Level::kSession);
  EXPECT_EQ(Ok("/read?x=1&consistency=strong&y").level, Level::kStrong);
  EXPECT_EQ(Ok("/read", " session ").level, Level::kSession);
  EXPECT_EQ(Ok("/read?consistency=local", "", Level::kSession).level, Level::kLocal);
  Requested b = Ok("/v1/counters/a?consistency=bounded&max_staleness_ms=250");
  EXPECT_EQ(b.level, Level::kBounded);
  EXPECT_EQ(*b.max_staleness_ms, 250);
  b = Ok("/read", "bounded; max_staleness_ms=0");
  EXPECT_EQ(*b.max_staleness_ms, 0);
  b = Ok("/read?max_staleness_ms=90", "bounded");
  EXPECT_EQ(*b.max_staleness_ms, 90);
  EXPECT_FALSE(Ok("/read?consistency=session").max_staleness_ms.has_value());
}

TEST(ConsistencyTest, BadRequestsSayWhatIsAllowed) {
  EXPECT_NE(Err("/read?consistency=eventual").find("local, bounded, session or strong"),
            std::string::npos);
  EXPECT_NE(Err("/read?consistency=").find("allowed"), std::string::npos);
  EXPECT_NE(Err("/read?consistency=bounded").find("max_staleness_ms"), std::string::npos);
  for (const char* m : {"", "-1", "1.5", "abc", "86400001", "99999999999999999999", "10x"}) {
    EXPECT_NE(
        Err(std::string("/read?consistency=bounded&max_staleness_ms=") + m).find("0..86400000"),
        std::string::npos)
        << m;
  }
  EXPECT_NE(Err("/read?max_staleness_ms=5").find("only with consistency=bounded"),
            std::string::npos);
  EXPECT_NE(Err("/read?consistency=local", "session").find("disagree"), std::string::npos);
  Err("/read?consistency=local&consistency=session");
  Err("/read", "bounded; staleness=4");
  Err("/read", "bounded; max_staleness_ms");
  Err("/read", "Session");  // Level names are lower case.
  EXPECT_NE(Err("/read", std::string("x\x01\xff", 3)).find("\"x??\""), std::string::npos);
}

}  // namespace
}  // namespace edgestate::consistency
