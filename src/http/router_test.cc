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
TEST(RouterTest, KeyAndCacheRoutes) {
  RouteMatch m = MatchRoute("/v1/kv/user%2F1?ttl_ms=5");
  EXPECT_EQ(m.route, Route::kKey);
  EXPECT_EQ(m.name, "user/1");
  m = MatchRoute("/v1/kv/user/1");  // Raw slashes are part of the key.
  EXPECT_EQ(m.route, Route::kKey);
  EXPECT_EQ(m.name, "user/1");
  m = MatchRoute("/v1/kv/a%2Ftouch");
  EXPECT_EQ(m.route, Route::kKey);
  EXPECT_EQ(m.name, "a/touch");
  m = MatchRoute("/v1/kv/s%201/touch?ttl_ms=9");
  EXPECT_EQ(m.route, Route::kKeyTouch);
  EXPECT_EQ(m.name, "s 1");
  EXPECT_EQ(MatchRoute("/v1/kv").route, Route::kKeyList);
  EXPECT_EQ(MatchRoute("/v1/kv?prefix=a").route, Route::kKeyList);
  EXPECT_EQ(MatchRoute("/v1/cache/purge").route, Route::kCachePurge);
  m = MatchRoute("/v1/cache/img%2Fa.png");
  EXPECT_EQ(m.route, Route::kCacheEntry);
  EXPECT_EQ(m.name, "img/a.png");
  EXPECT_FALSE(MatchRoute("/v1/kv/%zz").error.ok());
  EXPECT_TRUE(MethodAllowed(Route::kKey, "PUT"));
  EXPECT_TRUE(MethodAllowed(Route::kKey, "DELETE"));
  EXPECT_FALSE(MethodAllowed(Route::kKey, "POST"));
  EXPECT_FALSE(MethodAllowed(Route::kKey, "PU"));
  EXPECT_TRUE(MethodAllowed(Route::kKeyTouch, "POST"));
  EXPECT_FALSE(MethodAllowed(Route::kKeyList, "PUT"));
}

TEST(RouterTest, QueryParams) {
  EXPECT_EQ(*QueryParam("/v1/kv?prefix=a%2Fb&limit=5", "prefix"),
            std::optional<std::string>("a/b"));
  EXPECT_EQ(*QueryParam("/v1/kv?prefix=a&limit=5", "limit"), std::optional<std::string>("5"));
  EXPECT_EQ(*QueryParam("/v1/kv?prefix", "prefix"), std::optional<std::string>(""));
  EXPECT_FALSE(QueryParam("/v1/kv?limit=5", "prefix")->has_value());
  EXPECT_FALSE(QueryParam("/v1/kv", "prefix")->has_value());
  EXPECT_FALSE(QueryParam("/v1/kv?prefix=a&prefix=b", "prefix").ok());
  EXPECT_FALSE(QueryParam("/v1/kv?prefix=%g1", "prefix").ok());
  EXPECT_FALSE(QueryParam("/v1/kv?xprefix=1", "prefix")->has_value());
}

}  // namespace edgestate::http
