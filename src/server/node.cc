#include "server/node.h"

#include <fmt/format.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "common/metrics.h"
#include "env/signals.h"
#include "http/api.h"
#include "http/server.h"
#include "http/tls.h"
#include "replication/auth.h"
#include "replication/discovery.h"
#include "replication/replicator.h"
#include "service/consistency_gate.h"
#include "service/keyspace.h"
#include "storage/store.h"
#include "strong/strong_service.h"

namespace edgestate::server {

int AvailableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

namespace {

// From listening to the store's read-write open when no write asks for it sooner: a start's
// first answers do not share the node's core with it (docs/storage.md, "Start-up").
constexpr std::chrono::milliseconds kWritableOpenDelay(50);

std::string HexSecret() {
  std::string out;
  for (unsigned char c : replication::RandomNonce()) out += fmt::format("{:02x}", c);
  return out;
}

}  // namespace

Status RunNode(const ServeConfig& config) {
  // Termination signals, and SIGHUP (reload the client certificate), are taken synchronously
  // by this thread (sigwait below).
  sigset_t signals = BlockTerminationSignals(/*with_sigchld=*/false, /*with_sighup=*/true);

  // Before anything else: a bad certificate stops the node at once, naming the file.
  std::shared_ptr<boost::asio::ssl::context> client_tls;
  if (!config.tls_cert.empty()) {
    auto tls = http::LoadServerTls(config.tls_cert, config.tls_key);
    if (!tls.ok()) return tls.status();
    client_tls = std::move(tls).value();
  }

  MetricsRegistry metrics;
  storage::StoreMetrics store_metrics;
  store_metrics.sync_write_seconds = &metrics.AddHistogram(
      "edgestate_fsync_seconds", "Latency of a synced batch write (WAL append + fdatasync).",
      ExponentialBuckets(0.0000625, 2, 16));
  store_metrics.wal_sync_seconds = &metrics.AddHistogram(
      "edgestate_wal_sync_seconds", "Latency of the periodic WAL sync in async durability mode.",
      ExponentialBuckets(0.0000625, 2, 16));
  store_metrics.record_cache_hits = &metrics.AddCounter(
      "edgestate_record_cache_hits_total",
      "Point reads of keys, cache entries and purges answered from the record cache.");
  store_metrics.record_cache_misses =
      &metrics.AddCounter("edgestate_record_cache_misses_total",
                          "Point reads of keys, cache entries and purges that went to RocksDB.");

  // A store whose read-write open fails after the node began serving reads from it ends the
  // node with its error (exit 1, below), as a failure before serving does.
  auto store = storage::Store::Open(
      config.data_dir, store_metrics, static_cast<size_t>(config.cache_mb) << 20,
      [](const Status&) { kill(getpid(), SIGTERM); });  // Taken by the sigwait below.
  if (!store.ok()) return store.status();

  auto peers = *replication::ParsePeers(config.peers, config.region);  // Validated with the config.
  service::KeyspaceOptions svc_options;
  // A damaged store found by the background load of the counters ends the node with its error
  // (exit 1, below), as one found at start-up does: it is never served from.
  svc_options.on_loaded = [](const Status& s) {
    if (!s.ok()) kill(getpid(), SIGTERM);  // Taken by the sigwait below.
  };
  svc_options.region = config.region;
  svc_options.durability = config.durability;
  svc_options.async_sync_interval = std::chrono::milliseconds(config.async_sync_interval_ms);
  svc_options.has_peers = !peers.empty() || !config.peers_dns.empty();
  svc_options.max_pending_writes = static_cast<size_t>(config.max_pending_writes);
  svc_options.max_pending_write_bytes = static_cast<size_t>(config.max_pending_write_mb) << 20;
  svc_options.max_batch = static_cast<size_t>(config.max_batch_writes);
  svc_options.writer_nice = static_cast<int>(config.writer_nice);
  svc_options.sweep_bytes_per_sec = static_cast<uint64_t>(config.sweep_mb_per_s) << 20;
  auto counters = service::Keyspace::Open(store->get(), svc_options, &metrics);
  if (!counters.ok()) return counters.status();
  if ((*counters)->loaded()) {
    spdlog::info("loaded {} counters from {} in {} ms", (*counters)->size(), config.data_dir,
                 (*counters)->load_time().count());
  } else {
    spdlog::info("opened {}; its counters load in the background", config.data_dir);
  }

  // Session tokens are authenticated with the cluster secret; a node without one keeps a random
  // secret of its own in its data directory, so its tokens survive restarts.
  // Their positional form needs every node to know the same regions: not so with --peers-dns.
  std::vector<std::string> regions;
  if (config.peers_dns.empty()) {
    regions.push_back(config.region);
    for (const auto& p : peers) regions.push_back(p.region);
  }
  std::string token_secret = config.cluster_secret;
  if (token_secret.empty()) {
    // Made only when absent: starting the random generator costs milliseconds.
    auto secret = (*store)->GetOrCreateMeta("session-secret", HexSecret);
    if (!secret.ok()) return secret.status();
    token_secret = *secret;
  }
  consistency::SessionCodec codec(std::move(regions), token_secret);

  std::unique_ptr<http::OriginClient> origin;
  if (!config.cache_origin.empty()) {
    http::OriginOptions oo;
    oo.url = config.cache_origin;
    oo.region = config.region;
    oo.timeout = std::chrono::milliseconds(config.origin_timeout_ms);
    oo.max_body_bytes = service::kMaxValueBytes;
    auto o = http::OriginClient::Create(std::move(oo), &metrics);
    if (!o.ok()) return o.status();
    origin = std::move(o).value();
    // Misses after a purge never join a fetch that began before it. Set before replication
    // starts (the writer calls it); declared before the writer's stop and the replicator, the
    // origin client outlives both on every way out.
    (*counters)->SetPurgeListener(
        [o = origin.get()](std::string_view pattern) { o->Invalidate(std::string(pattern)); });
  }

  // Replication, or the view of a node alone. The gate outlives both (it is their listener).
  std::unique_ptr<service::ConsistencyGate> gate;
  std::unique_ptr<replication::Replicator> replicator;
  replication::SingleNodeView single(config.region);
  service::ClusterView* cluster = &single;
  if (!config.peer_listen.empty()) {
    replication::ReplicatorOptions ro;
    ro.region = config.region;
    ro.cluster_secret = config.cluster_secret;
    if (config.peer_insecure_plaintext) {
      ro.tls.mode = replication::PeerTlsOptions::Mode::kPlaintext;
    } else if (!config.peer_tls_cert.empty()) {
      ro.tls.mode = replication::PeerTlsOptions::Mode::kCertificates;
      ro.tls.cert_file = config.peer_tls_cert;
      ro.tls.key_file = config.peer_tls_key;
      ro.tls.ca_file = config.peer_tls_ca;
    }
    ro.listen = *replication::ParseHostPort(
        config.peer_listen, /*allow_port_zero=*/true);  // Validated with the config.
    ro.peers = std::move(peers);
    ro.peers_discovered = !config.peers_dns.empty();
    ro.interval = std::chrono::milliseconds(config.replication_interval_ms);
    ro.max_clock_error = std::chrono::milliseconds(config.max_clock_error_ms);
    replicator =
        std::make_unique<replication::Replicator>(std::move(ro), counters->get(), &metrics);
    cluster = replicator.get();
  }
  service::ConsistencyGateOptions gate_options;
  gate_options.region = config.region;
  gate_options.session_wait = std::chrono::milliseconds(config.session_wait_ms);
  gate = std::make_unique<service::ConsistencyGate>(gate_options, counters->get(), cluster, &codec,
                                                    &metrics);
  // Strong operations (docs/strong.md) travel on the replication links: the service registers
  // its call handler before they start.
  std::unique_ptr<strong::StrongService> strong;
  if (replicator) {
    strong::StrongOptions so;
    so.region = config.region;
    so.voters = config.strong_voters;
    so.timeout = std::chrono::milliseconds(config.strong_timeout_ms);
#ifdef EDGESTATE_FAULT_INJECTION
    if (const char* f = std::getenv("EDGESTATE_FAULT_STRONG_READS");
        f && std::string(f) == "local") {
      so.fault_local_reads = true;
      spdlog::warn("FAULT INJECTION: strong reads are served locally (not linearizable)");
    }
#endif
    auto opened = strong::StrongService::Open(std::move(so), store->get(), counters->get(),
                                              replicator.get(), &metrics);
    if (!opened.ok()) return opened.status();
    strong = std::move(opened).value();
    replicator->SetStrongStatus([s = strong.get()] { return s->StatusJson(); });
    if (!config.strong_voters.empty()) {
      spdlog::info("strong voters: {}", fmt::join(config.strong_voters, ","));
    }
  }
  // Peers found by DNS: destroyed (its thread joined) before the replicator it feeds, and
  // started once the replicator runs (SetPeers needs it).
  std::unique_ptr<replication::PeerDiscovery> discovery;
  if (replicator && !config.peers_dns.empty()) {
    replication::DiscoveryOptions d;
    d.spec = *replication::ParseDiscoverySpec(config.peers_dns);  // Validated with the config.
    d.region = config.region;
    d.machine_id = config.machine_id;
    // fly: peers listen where this node does (a fixed port, checked with the config); srv: the
    // records' ports unless --peers-dns-port.
    d.port = static_cast<uint16_t>(config.peers_dns_port);
    if (d.port == 0 && d.spec.kind == replication::DiscoverySpec::Kind::kFly) {
      d.port = replication::ParseHostPort(config.peer_listen, /*allow_port_zero=*/true)->port;
    }
    d.server = config.peers_dns_server;
    d.interval = std::chrono::milliseconds(config.peers_dns_interval_ms);
    discovery = std::make_unique<replication::PeerDiscovery>(
        std::move(d),
        [r = replicator.get()](std::vector<replication::PeerAddress> peers) {
          if (Status s = r->SetPeers(std::move(peers)); !s.ok()) {
            spdlog::warn("peers from DNS not applied: {}", s.message());
          }
        },
        &metrics);
    replicator->SetDiscoveryStatus([d = discovery.get()] { return d->StatusJson(); });
  }
  if (replicator) {
    if (Status s = replicator->Start(); !s.ok()) return s;
  }
  if (discovery) discovery->Start();
  // On every way out of this function the writer stops before the replicator is destroyed:
  // its callbacks post to the replicator's thread.
  struct StopWriter {
    service::Keyspace* c;
    ~StopWriter() { c->Stop(); }
  } stop_writer{counters->get()};

  http::ApiOptions api_options{config.region, config.api_key, config.data_dir};
  api_options.default_level = config.default_consistency;
  api_options.session_cookie = config.session_cookie;
  api_options.cache_default_ttl_ms = config.cache_default_ttl_ms;
  http::Api api(api_options, counters->get(), cluster, gate.get(), &metrics, strong.get(),
                origin.get());
  http::HttpMetrics http_metrics(&metrics);
  http::HttpServerOptions http_options;
  http_options.listen_address = config.listen;
  http_options.port = config.port;
  http_options.threads = config.threads > 0 ? config.threads : AvailableCpus();
  http_options.max_connections = static_cast<size_t>(config.max_connections);
  http_options.request_timeout = std::chrono::milliseconds(config.request_timeout_ms);
  http_options.tls = client_tls;
  http::HttpServer server(http_options, &api, &http_metrics);
  metrics.AddGauge("edgestate_http_connections", "Open client connections.",
                   [&server] { return static_cast<double>(server.active_connections()); });
  if (Status s = server.Start(); !s.ok()) return s;

  // The private metrics listener: plain HTTP, one thread, few connections.
  http::MetricsEndpoint metrics_endpoint(&metrics);
  std::unique_ptr<http::HttpServer> metrics_server;
  if (!config.metrics_listen.empty()) {
    auto hp = *replication::ParseHostPort(config.metrics_listen,
                                          /*allow_port_zero=*/true);  // Validated with the config.
    http::HttpServerOptions mo;
    mo.listen_address = hp.host;
    mo.port = hp.port;
    mo.threads = 1;
    mo.thread_name = "es-metrics";
    mo.max_connections = 64;
    mo.request_timeout = std::chrono::milliseconds(config.request_timeout_ms);
    metrics_server = std::make_unique<http::HttpServer>(mo, &metrics_endpoint, &http_metrics);
    if (Status s = metrics_server->Start(); !s.ok()) {
      server.Shutdown();
      return s;
    }
    spdlog::info("metrics on {}:{} (GET /metrics, no API key)", hp.host, metrics_server->port());
  }

  // Serving first; the store's read-write open once the first answers are out (or when a write
  // needs it), then the load of the counters: neither delays the first answers.
  (*store)->StartWritableOpen(kWritableOpenDelay);
  (*counters)->StartLoading();

  std::printf(
      "edgestate listening on %s://%s:%u region=%s data=%s durability=%s peer_port=%u "
      "metrics_port=%u\n",
      client_tls ? "https" : "http", config.listen.c_str(), server.port(), config.region.c_str(),
      config.data_dir.c_str(), config.durability == service::Durability::kFsync ? "fsync" : "async",
      replicator ? replicator->peer_port() : 0u, metrics_server ? metrics_server->port() : 0u);
  std::fflush(stdout);
  spdlog::info("serving region {} on {}:{} with {} I/O threads", config.region, config.listen,
               server.port(), http_options.threads);

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (std::optional<Status> loaded = (*counters)->LoadResult(); loaded && !loaded->ok()) {
      spdlog::error("stopping: the data directory cannot be served from");
      break;
    }
    if (std::optional<Status> opened = (*store)->WritableResult(); opened && !opened->ok()) {
      spdlog::error("stopping: the data directory cannot be written");
      break;
    }
    if (sig != SIGHUP) {
      spdlog::info("received {}; draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      break;
    }
    // Peer certificates first: they do not depend on the client port's.
    if (replicator) {
      if (Status s = replicator->ReloadTls(); s.ok()) {
        spdlog::info(
            "SIGHUP: reloaded the peer certificate {}, key and CA; new peer links use them",
            config.peer_tls_cert);
      } else if (s.code() != StatusCode::kFailedPrecondition) {  // Not without certificates.
        spdlog::error("SIGHUP: keeping the current peer certificate: {}", s.message());
      }
    }
    if (!client_tls) {
      spdlog::info("SIGHUP: no client certificate to reload (no --tls-cert)");
      continue;
    }
    // A failed reload keeps the certificate in service: a typo must not take the port down.
    auto tls = http::LoadServerTls(config.tls_cert, config.tls_key);
    if (!tls.ok()) {
      spdlog::error("SIGHUP: keeping the current certificate: {}", tls.status().message());
      continue;
    }
    server.ReplaceTls(std::move(tls).value());
    spdlog::info("SIGHUP: reloaded {} and {}; new connections use them", config.tls_cert,
                 config.tls_key);
  }
  if (metrics_server) metrics_server->Shutdown();
  server.Shutdown();           // No new requests; in-flight ones finish.
  if (strong) strong->Stop();  // What still waits for consensus fails with 503.
  discovery.reset();
  if (replicator) replicator->Stop();  // Links closed; peers catch up from us on reconnect.
  (*counters)->Stop();                 // Everything queued is committed and synced.
  // After the writer: a stored fill releases its origin flight (Api::FillFromOrigin). Fetches
  // still in flight answer 503.
  origin.reset();
  if (std::optional<Status> opened = (*store)->WritableResult(); opened && !opened->ok()) {
    return *opened;
  }
  if (std::optional<Status> loaded = (*counters)->LoadResult();
      loaded && !loaded->ok() && loaded->code() != StatusCode::kAborted) {
    return *loaded;
  }
  spdlog::info("shut down cleanly");
  return Status::Ok();
}

}  // namespace edgestate::server
