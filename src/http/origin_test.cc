#include "http/origin.h"

#include <gtest/gtest.h>

#include "crdt/lww_register.h"

namespace edgestate::http {
namespace {

TEST(OriginTest, ParsesUrls) {
  auto u = ParseOriginUrl("http://origin.example:8080/assets/");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->host, "origin.example");
  EXPECT_EQ(u->port, "8080");
  EXPECT_EQ(u->base_path, "/assets");
  u = ParseOriginUrl("http://[::1]:9000");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, "9000");
  EXPECT_EQ(u->base_path, "");
  EXPECT_EQ(ParseOriginUrl("http://h")->port, "80");
  for (const char* bad :
       {"https://h", "h:80", "http://", "http://:80", "http://h:0", "http://h:65536", "http://h:x",
        "http://[::1", "http://[::1]x", "http://h/p?q=1", "http://h/p#f"}) {
    EXPECT_FALSE(ParseOriginUrl(bad).ok()) << bad;
  }
}

TEST(OriginTest, CachePolicyFollowsCacheControl) {
  auto p = PolicyFor("", 60000);
  EXPECT_TRUE(p.store);
  EXPECT_EQ(p.ttl_ms, 60000);
  EXPECT_FALSE(PolicyFor("", 0).store);
  p = PolicyFor("public, max-age=30", 60000);
  EXPECT_TRUE(p.store);
  EXPECT_EQ(p.ttl_ms, 30000);
  p = PolicyFor("max-age=30, s-maxage=5", 60000);  // s-maxage first, for a shared cache.
  EXPECT_EQ(p.ttl_ms, 5000);
  p = PolicyFor("S-MaxAge=\"7\"", 60000);
  EXPECT_EQ(p.ttl_ms, 7000);
  EXPECT_FALSE(PolicyFor("max-age=0", 60000).store);
  EXPECT_FALSE(PolicyFor("no-store, max-age=100", 60000).store);
  EXPECT_FALSE(PolicyFor("private", 60000).store);
  p = PolicyFor("max-age=99999999999999999999", 60000);  // Capped at the TTL limit.
  EXPECT_TRUE(p.store);
  EXPECT_EQ(p.ttl_ms, crdt::kMaxTtlMs);
  p = PolicyFor("max-age=-3, max-age=abc", 60000);  // Malformed directives are ignored.
  EXPECT_EQ(p.ttl_ms, 60000);
}

TEST(OriginTest, PercentEncodesAllButUnreserved) {
  EXPECT_EQ(PercentEncode("a-Z_9.~"), "a-Z_9.~");
  EXPECT_EQ(PercentEncode("img/a b?c"), "img%2Fa%20b%3Fc");
  EXPECT_EQ(PercentEncode("\xff"), "%FF");
  // Never a dot segment of the origin's path.
  EXPECT_EQ(PercentEncode("."), "%2E");
  EXPECT_EQ(PercentEncode(".."), "%2E%2E");
  EXPECT_EQ(PercentEncode("..."), "...");
}

}  // namespace
}  // namespace edgestate::http
