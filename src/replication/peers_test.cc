#include "replication/peers.h"

#include <gtest/gtest.h>

namespace edgestate::replication {
namespace {

TEST(PeersTest, ParsesList) {
  auto p = ParsePeers("lhr=127.0.0.1:7002,fra=[::1]:7003,nrt=nrt.app.internal:7100", "iad");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->size(), 3u);
  EXPECT_EQ((*p)[0].region, "lhr");
  EXPECT_EQ((*p)[0].address.host, "127.0.0.1");
  EXPECT_EQ((*p)[0].address.port, 7002);
  EXPECT_EQ((*p)[1].address.host, "::1");
  EXPECT_EQ((*p)[2].address.host, "nrt.app.internal");
  EXPECT_TRUE(ParsePeers("", "iad")->empty());
}

TEST(PeersTest, RejectsBadEntries) {
  for (const char* bad : {"lhr", "lhr=", "lhr=host", "lhr=host:0", "lhr=host:65536", "lhr=:7000",
                          "LHR=h:1", "lhr=h:1,lhr=h:2", "iad=h:1,iad=h:2", "iad=h:0",
                          "lhr=::1:7000", "lhr=[::1]7000", "lhr=h:12x"}) {
    EXPECT_FALSE(ParsePeers(bad, "iad").ok()) << bad;
  }
}

TEST(PeersTest, OwnEntryIsLeftOutSoOneListServesEveryNode) {
  const char* list = "iad=a:7946,lhr=b:7946,sin=c:7946";
  for (const char* self : {"iad", "lhr", "sin"}) {
    auto p = ParsePeers(list, self);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    ASSERT_EQ(p->size(), 2u) << self;
    for (const PeerAddress& a : *p) EXPECT_NE(a.region, self);
  }
  EXPECT_TRUE(ParsePeers("iad=a:7946", "iad")->empty());
}

}  // namespace
}  // namespace edgestate::replication
