#include "replication/discovery.h"

#include <gtest/gtest.h>

namespace edgestate::replication {
namespace {

TEST(DiscoveryTest, SpecsAreFlyOrSrvWithADnsName) {
  auto fly = ParseDiscoverySpec("fly:edgestate-demo");
  ASSERT_TRUE(fly.ok());
  EXPECT_EQ(fly->kind, DiscoverySpec::Kind::kFly);
  EXPECT_EQ(fly->name, "edgestate-demo");
  auto srv = ParseDiscoverySpec("srv:_peer._tcp.edgestate-peers.default.svc.cluster.local");
  ASSERT_TRUE(srv.ok());
  EXPECT_EQ(srv->kind, DiscoverySpec::Kind::kSrv);
  for (const char* bad : {"", "fly:", "srv:", "dns:x", "fly:a b", "srv:..x", "srv:.x", "fly:x\n",
                          "FLY:x", "srv:a/b"}) {
    auto r = ParseDiscoverySpec(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(ParseDiscoverySpec("srv:" + std::string(254, 'a')).ok());
}

TEST(DiscoveryTest, FlyVmsRecordsListMachinesAndSkipWhatIsMalformed) {
  EXPECT_EQ(ParseFlyVms("683d314fdd4d68 yyz,568323e9b54dd8 lhr"),
            (std::vector<FlyMachine>{{"683d314fdd4d68", "yyz"}, {"568323e9b54dd8", "lhr"}}));
  EXPECT_EQ(ParseFlyVms(" a1 iad , b2 fra,"),
            (std::vector<FlyMachine>{{"a1", "iad"}, {"b2", "fra"}}));
  // No region, a bad region, a bad id, empty items: skipped.
  EXPECT_EQ(ParseFlyVms("a1,b2 FRA,c-3 lhr,,d4 syd"), (std::vector<FlyMachine>{{"d4", "syd"}}));
  EXPECT_TRUE(ParseFlyVms("").empty());
}

TEST(DiscoveryTest, SrvTargetsNameTheirRegionAndOrdinal) {
  auto p = ParseSrvTarget("edgestate-lhr-0.edgestate-peers.default.svc.cluster.local");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->region, "lhr");
  EXPECT_EQ(p->ordinal, 0u);
  p = ParseSrvTarget("edgestate-us-east-1-12.peers");  // Regions may hold '-'.
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->region, "us-east-1");
  EXPECT_EQ(p->ordinal, 12u);
  for (const char* bad : {"edgestate-0.x", "lhr-0", "edgestate-lhr.x", "edgestate-lhr-.x",
                          "edgestate-LHR-0.x", "-lhr-0.x", "edgestate-lhr-0x.x", ""}) {
    EXPECT_FALSE(ParseSrvTarget(bad).has_value()) << bad;
  }
}

TEST(DiscoveryTest, AnUnreachableServerIsAFailureNotAnEmptySet) {
  // Nothing answers DNS on this port: the caller must keep its peers, so this is an error.
  DiscoveryOptions o;
  o.spec = *ParseDiscoverySpec("fly:app");
  o.region = "iad";
  o.port = 7946;
  o.server = "127.0.0.1:9";
  o.timeout = std::chrono::milliseconds(300);
  auto r = ResolvePeers(o);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  o.server = "not an address";
  EXPECT_FALSE(ResolvePeers(o).ok());
}

}  // namespace
}  // namespace edgestate::replication
