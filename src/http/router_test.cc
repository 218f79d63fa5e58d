#include "http/router.h"

#include <gtest/gtest.h>

namespace edgestate::http {
namespace {

TEST(RouterTest, ArticleRoutes) {
  EXPECT_EQ(MatchRoute("/increment").route, Route::kIncrement);
  EXPECT_EQ(MatchRoute("/read").route, Route::kRead);
  EXPECT_EQ(MatchRoute("/read?x=1").route, Route::kRead);
  EXPECT_EQ(MatchRoute("/health").route, Route::kHealth);
  EXPECT_EQ(MatchRoute("/metrics").route, Route::kMetrics);
}

TEST(RouterTest, CounterRoutesDecodeNames) {
  RouteMatch m = MatchRoute("/v1/counters/page%2Fhome");
  EXPECT_EQ(m.route, Route::kCounter);
  EXPECT_EQ(m.name, "page/home");
  m = MatchRoute("/v1/counters/caf%C3%A9/increment?z");
  EXPECT_EQ(m.route, Route::kCounterIncrement);
  EXPECT_EQ(m.name, "caf\xc3\xa9");
  m = MatchRoute("/v1/counters/");
  EXPECT_EQ(m.route, Route::kCounter);
  EXPECT_EQ(m.name, "");
}

TEST(RouterTest, UnknownPathsAreNone) {
  EXPECT_EQ(MatchRoute("/").route, Route::kNone);
  EXPECT_EQ(MatchRoute("/reads").route, Route::kNone);
  EXPECT_EQ(MatchRoute("/v1/counters/a/b").route, Route::kNone);
  EXPECT_EQ(MatchRoute("/v1/counters/a/increment/x").route, Route::kNone);
  EXPECT_EQ(MatchRoute("http://host/read").route, Route::kNone);
  EXPECT_EQ(MatchRoute("").route, Route::kNone);
}

TEST(RouterTest, BadEscapesAreErrors) {
  EXPECT_FALSE(MatchRoute("/v1/counters/a%2").error.ok());
  EXPECT_FALSE(MatchRoute("/v1/counters/a%").error.ok());
  EXPECT_FALSE(MatchRoute("/v1/counters/a%zz").error.ok());
  EXPECT_EQ(*PercentDecode("%41%62c"), "Abc");
  EXPECT_EQ(*PercentDecode("%00"), std::string(1, '\0'));
}

TEST(RouterTest, Allow) {
  EXPECT_EQ(AllowedMethods(Route::kIncrement), "POST");
  EXPECT_EQ(AllowedMethods(Route::kCounterIncrement), "POST");
  EXPECT_EQ(AllowedMethods(Route::kRead), "GET");
}

}  // namespace
}  // namespace edgestate::http
