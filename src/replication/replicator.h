// Replicator: this node's links to the other regions (docs/replication.md).
//
// For every peer there are two TCP connections, each encrypted with TLS 1.3 (tls.h; unless
// --peer-insecure-plaintext) and authenticated with the cluster secret:
//  - outbound: this node connects to the peer's --peer-listen address and pushes its own
//    region's slots. After the handshake the peer says up to which sequence number it already
//    has this region's writes (anti-entropy); the link then ships every change after that, and
//    every --replication-interval ships what changed since (0: at once), followed by a
//    heartbeat that lets the peer bound its staleness;
//  - inbound: the peer connects here and pushes its slots; they are applied through the
//    counter service's writer (durably, idempotently) before the next frame is read.
// A link that fails is closed and retried with exponential backoff; it never blocks local
// requests or the other links. Nothing from an unauthenticated connection is applied.
//
// The links also carry the strong layer's calls (strong::Transport): a call goes out on the
// outbound link to the peer and its reply comes back on the same connection.
//
// Threading: all links run on one replication thread with its own io_context. StalenessMs,
// ClusterJson, Call, LinkRttUs and Stop are safe from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"
#include "replication/peers.h"
#include "replication/tls.h"
#include "service/cluster_view.h"
#include "service/keyspace.h"
#include "strong/transport.h"

namespace edgestate::replication {

struct ReplicatorOptions {
  std::string region;
  std::string cluster_secret;
  PeerTlsOptions tls;  // Default: TLS 1.3 with a key derived from cluster_secret.
  HostPort listen;     // port 0: pick a free port (see peer_port()).
  std::vector<PeerAddress> peers;
  // The peers come from SetPeers (DNS discovery): until its first call the staleness bound is
  // unknown, not 0 (a node that does not know its peers cannot bound what it misses).
  bool peers_discovered = false;
  std::chrono::milliseconds interval{100};  // 0: ship each commit at once.
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds handshake_timeout{5000};
  // A link (either direction) is closed after this much silence from its peer; at least three
  // intervals, since an idle link hears from its peer once per interval.
  std::chrono::milliseconds idle_timeout{30000};
  // How far apart the nodes' wall clocks may be (docs/consistency.md). A peer's watermarks give
  // a clock-based bound while its measured offset is within this; 0: never use them.
  std::chrono::milliseconds max_clock_error{10};
};

class Replicator final : public service::ClusterView, public strong::Transport {
 public:
  // `counters` and `metrics` must outlive the replicator.
  Replicator(ReplicatorOptions options, service::Keyspace* counters, MetricsRegistry* metrics);
  ~Replicator() override;  // Stop().

  // Binds the peer listener and starts the replication thread and every outbound link.
  // Unavailable when the listener cannot be bound; InvalidArgument when the TLS certificate,
  // key or CA cannot be loaded.
  Status Start();
  uint16_t peer_port() const;
  // Reads the certificate, key and CA files again (certificate mode): connections made after
  // it use them, established links keep theirs. On an error (InvalidArgument naming the file)
  // the current ones stay; FailedPrecondition when peer links use no certificates. Safe from
  // any thread after Start.
  Status ReloadTls();
  // Closes every link and joins the thread. Idempotent.
  void Stop();
  // Replaces the peer set (regions found by DNS): a new region gets links at once; a region no
  // longer listed has its links closed and its staleness no longer counted (its writes stay;
  // it may come back with a newer life, or the same one); a region whose address changed is
  // dropped and added again. Entries for this node's region are ignored. Safe from any thread
  // after Start; applied on the replication thread soon after it returns. InvalidArgument for
  // an invalid or repeated region (nothing changes); FailedPrecondition before Start or after
  // Stop.
  Status SetPeers(std::vector<PeerAddress> peers);

  std::optional<int64_t> StalenessMs() const override;
  std::optional<int64_t> StalenessFloorMs() const override;
  void Pull(const std::vector<std::string>& regions) override;
  void SetProgressListener(std::function<void()> listener) override;
  std::string ClusterJson() const override;
  // The "strong" member of ClusterJson (a JSON object); set before Start.
  void SetStrongStatus(std::function<std::string()> status);
  // The "discovery" member of ClusterJson (a JSON object; peers found by DNS); set before Start.
  void SetDiscoveryStatus(std::function<std::string()> status);

  void Call(const std::string& region, std::string payload, ReplyCallback done) override;
  void SetCallHandler(Handler handler) override;
  std::optional<int64_t> LinkRttUs(const std::string& region) const override;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// The ClusterView of a node without peers: always fresh.
class SingleNodeView final : public service::ClusterView {
 public:
  explicit SingleNodeView(std::string region) : region_(std::move(region)) {}
  std::optional<int64_t> StalenessMs() const override { return 0; }
  std::optional<int64_t> StalenessFloorMs() const override { return 0; }
  void Pull(const std::vector<std::string>&) override {}
  void SetProgressListener(std::function<void()>) override {}
  std::string ClusterJson() const override;

 private:
  std::string region_;
};

}  // namespace edgestate::replication
