#include "netem/rtt_model.h"

#include <gtest/gtest.h>

namespace edgestate::netem {
namespace {

TEST(RttModelTest, DefaultIsTheShippedEightRegions) {
  const RttModel& m = RttModel::Default();
  EXPECT_EQ(m.regions(),
            (std::vector<std::string>{"iad", "sjc", "lhr", "fra", "nrt", "syd", "gru", "jnb"}));
  EXPECT_EQ(m.RttMs("iad", "lhr"), 80);
  EXPECT_EQ(m.RttMs("lhr", "iad"), 80);
  EXPECT_EQ(m.RttMs("gru", "jnb"), 340);
  EXPECT_EQ(m.RttMs("syd", "syd"), 0);
}

TEST(RttModelTest, ParsesOtherMatrices) {
  auto m = RttModel::Parse("# two regions\nfrom,a,b\na,0,12.5\nb,12.5,0\n");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->RttMs("a", "b"), 12.5);
  EXPECT_TRUE(m->Has("a"));
  EXPECT_FALSE(m->Has("c"));
}

TEST(RttModelTest, RejectsMalformedMatrices) {
  for (const char* bad :
       {"", "from\n", "from,a,b\na,0,1\n", "from,a,b\na,0,1\nb,2,0\n", "from,a,b\na,0,x\nb,1,0\n",
        "from,a,b\na,1,1\nb,1,0\n", "from,a,a\na,0,1\na,1,0\n", "from,a,b\nb,0,1\na,1,0\n",
        "from,A,b\nA,0,1\nb,1,0\n", "from,a,b\na,0,-1\nb,-1,0\n"}) {
    EXPECT_FALSE(RttModel::Parse(bad).ok()) << bad;
  }
  EXPECT_EQ(RttModel::Load("/nonexistent.csv").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace edgestate::netem
