#include "common/region.h"

#include <gtest/gtest.h>

#include <string>

namespace edgestate {
namespace {

TEST(RegionTest, OneRuleForEveryRegionName) {
  for (const char* ok : {"iad", "eu-west_1", "a", "0"}) {
    EXPECT_TRUE(IsRegionName(ok)) << ok;
    EXPECT_TRUE(ValidateRegionName(ok).ok()) << ok;
  }
  EXPECT_TRUE(IsRegionName(std::string(32, 'x')));
  for (const std::string& bad :
       {std::string(), std::string(33, 'x'), std::string("IAD"), std::string("i ad"),
        std::string("iad@1"), std::string("ia\0d", 4), std::string("r\xc3\xa9")}) {
    EXPECT_FALSE(IsRegionName(bad)) << bad;
    Status s = ValidateRegionName(bad);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(ValidateRegionName("IAD").message().find("\"IAD\""), std::string::npos);
  EXPECT_NE(ValidateRegionName("").message().find("1 to 32"), std::string::npos);
}

}  // namespace
}  // namespace edgestate
