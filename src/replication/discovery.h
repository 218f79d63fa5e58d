// Peer discovery by DNS (--peers-dns; docs/replication.md "Peers found by DNS"): the peer set is
// resolved from DNS records and re-resolved periodically, so regions join and leave without a
// restart. Two sources:
//  - fly:APP, Fly.io's internal DNS: the TXT record of vms.APP.internal lists the app's machines
//    as "ID REGION" pairs separated by commas; ID.vm.APP.internal has a machine's IPv6 (6PN)
//    address (AAAA). This node is recognised by its machine id (FLY_MACHINE_ID) or its region.
//  - srv:NAME, an SRV record set (a Kubernetes headless service's _peer._tcp.SERVICE...): each
//    target's first label is a StatefulSet pod, APP-REGION-ORDINAL (deploy/k8s names them so);
//    its address comes from AAAA, else A records, of the target.
// One node per region: of several machines claiming one region, the one with the smallest id
// (ordinal) is taken, on every node alike; a machine claiming this node's region is skipped.
//
// Resolution uses c-ares, against the system's resolvers (/etc/resolv.conf, with its search
// list) or a given server.
// Thread-safety: the pure functions are safe from any thread; PeerDiscovery runs one thread of
// its own and calls its listener there.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"
#include "replication/peers.h"

namespace edgestate::replication {

struct DiscoverySpec {
  enum class Kind { kFly, kSrv };
  Kind kind = Kind::kFly;
  std::string name;  // fly: the app name; srv: the SRV record's name.
};

// "fly:APP" or "srv:NAME" (NAME a DNS name of at most 253 characters: letters, digits, '-', '_'
// and '.'). InvalidArgument naming what is wrong otherwise.
StatusOr<DiscoverySpec> ParseDiscoverySpec(std::string_view s);

struct FlyMachine {
  std::string id;
  std::string region;
  bool operator==(const FlyMachine&) const = default;
};
// The machines of a vms.APP.internal TXT record (its strings concatenated). Entries that are not
// "ID REGION" with a valid region and an id of letters and digits are skipped.
std::vector<FlyMachine> ParseFlyVms(std::string_view txt);

// The region and ordinal of an SRV target "APP-REGION-ORDINAL.rest.of.name"; nullopt when its
// first label does not have that shape or the region is not a valid region name.
struct SrvPod {
  std::string region;
  uint64_t ordinal = 0;
};
std::optional<SrvPod> ParseSrvTarget(std::string_view target);

struct DiscoveryOptions {
  DiscoverySpec spec;
  std::string region;      // This node's region.
  std::string machine_id;  // This node's Fly machine id (FLY_MACHINE_ID); may be empty.
  // The port peers listen on; 0: the SRV record's port (fly: required).
  uint16_t port = 0;
  // "HOST:PORT" of the DNS server to ask; empty: the system's resolvers.
  std::string server;
  std::chrono::milliseconds interval{5000};  // Between resolutions.
  std::chrono::milliseconds timeout{2000};   // Per resolution, all its queries together.
};

// Resolves the peer set once, blocking for at most about options.timeout (less when *cancel,
// which may be null, becomes true). Unavailable when the records could not be read (the time
// limit, a refused or failed query, a cancel): the caller keeps the peers it has. A name that
// does not exist or has no records is an empty set.
StatusOr<std::vector<PeerAddress>> ResolvePeers(const DiscoveryOptions& options,
                                                const std::atomic<bool>* cancel = nullptr);

// How many answers in a row must leave a region out before it is dropped: one answer missing
// records (a DNS glitch, a machine's record briefly withdrawn) changes nothing; a region that
// is gone leaves after kMissesToRemove intervals.
inline constexpr int kMissesToRemove = 3;

// The peer set to use after a successful answer: every peer of `answer` (new regions and new
// addresses at once), plus each region of `in_use` missing from it fewer than
// kMissesToRemove answers in a row. `misses` (region -> answers in a row without it) is
// updated. Sorted by region. Pure.
std::vector<PeerAddress> NextPeerSet(const std::vector<PeerAddress>& in_use,
                                     std::vector<PeerAddress> answer,
                                     std::map<std::string, int>* misses);

class PeerDiscovery {
 public:
  using Listener = std::function<void(std::vector<PeerAddress>)>;

  // `metrics` must outlive this object.
  PeerDiscovery(DiscoveryOptions options, Listener on_peers, MetricsRegistry* metrics);
  ~PeerDiscovery();  // Stops and joins the thread.

  // Starts the thread: it resolves at once, then every interval, and calls `on_peers` with the
  // peer set (NextPeerSet of each successful answer) whenever it differs from the last one
  // delivered. Failures are logged and counted; the peers last delivered stay. Call once.
  void Start();
  // For /v1/cluster: {"source","peers","resolutions","failures","last_error",
  // "last_success_ms_ago"} (nulls before the first success or without an error). Any thread.
  std::string StatusJson() const;

  PeerDiscovery(const PeerDiscovery&) = delete;
  PeerDiscovery& operator=(const PeerDiscovery&) = delete;

 private:
  void Loop();

  const DiscoveryOptions options_;
  const Listener on_peers_;
  Counter* resolutions_ = nullptr;
  Counter* failures_ = nullptr;
  std::atomic<int64_t> peers_found_{-1};  // -1: never resolved.
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                       // GUARDED_BY(mu_)
  std::string last_error_;                  // GUARDED_BY(mu_); empty after a success.
  std::optional<int64_t> last_success_ms_;  // GUARDED_BY(mu_); steady clock.
  std::thread thread_;
};

}  // namespace edgestate::replication
