#include "replication/discovery.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

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

TEST(DiscoveryTest, ARegionLeavesOnlyAfterSeveralAnswersWithoutIt) {
  auto at = [](const char* region, const char* host) { return PeerAddress{region, {host, 7946}}; };
  auto regions = [](const std::vector<PeerAddress>& v) {
    std::vector<std::string> out;
    for (const auto& p : v) out.push_back(p.region + "@" + p.address.host);
    return out;
  };
  std::map<std::string, int> misses;
  std::vector<PeerAddress> in_use = {at("fra", "f1"), at("lhr", "l1")};
  // lhr missing once, twice: kept; a new region and a new address apply at once.
  in_use = NextPeerSet(in_use, {at("fra", "f2"), at("syd", "s1")}, &misses);
  EXPECT_EQ(regions(in_use), (std::vector<std::string>{"fra@f2", "lhr@l1", "syd@s1"}));
  in_use = NextPeerSet(in_use, {at("fra", "f2"), at("syd", "s1")}, &misses);
  EXPECT_EQ(regions(in_use), (std::vector<std::string>{"fra@f2", "lhr@l1", "syd@s1"}));
  // Back before the third miss: its count starts again.
  in_use = NextPeerSet(in_use, {at("fra", "f2"), at("lhr", "l1"), at("syd", "s1")}, &misses);
  EXPECT_TRUE(misses.empty());
  for (int i = 1; i < kMissesToRemove; ++i) {
    in_use = NextPeerSet(in_use, {at("fra", "f2")}, &misses);
    EXPECT_EQ(in_use.size(), 3u) << i;
  }
  in_use = NextPeerSet(in_use, {at("fra", "f2")}, &misses);
  EXPECT_EQ(regions(in_use), (std::vector<std::string>{"fra@f2"}));
  EXPECT_TRUE(misses.empty());
  // An empty answer (NXDOMAIN) empties the set only after as many answers.
  for (int i = 1; i < kMissesToRemove; ++i) {
    in_use = NextPeerSet(in_use, {}, &misses);
    EXPECT_EQ(in_use.size(), 1u);
  }
  EXPECT_TRUE(NextPeerSet(in_use, {}, &misses).empty());
}

// A DNS server that takes queries and never answers: a bound UDP socket nobody reads.
class SilentServer {
 public:
  SilentServer() {
    fd_ = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~SilentServer() { close(fd_); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

TEST(DiscoveryTest, AServerThatNeverAnswersEndsTheResolutionAtItsTimeLimitOrAtAStop) {
  SilentServer silent;
  DiscoveryOptions o;
  o.spec = *ParseDiscoverySpec("srv:_peer._tcp.edgestate-peers.test");
  o.region = "iad";
  o.server = silent.address();
  o.timeout = std::chrono::milliseconds(300);
  auto start = std::chrono::steady_clock::now();
  auto r = ResolvePeers(o);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  // A deadline for a hang, not a latency claim: the limit is 0.3 s.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));

  // A stop ends a resolution whose own limit is far away.
  o.timeout = std::chrono::minutes(10);
  std::atomic<bool> cancel{false};
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    cancel.store(true);
  });
  start = std::chrono::steady_clock::now();
  r = ResolvePeers(o, &cancel);
  stopper.join();
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));
}

}  // namespace
}  // namespace edgestate::replication
