#include "server/node.h"

#include <fmt/format.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "common/metrics.h"
#include "env/signals.h"
#include "http/api.h"
#include "http/server.h"
#include "replication/replicator.h"
#include "service/counter_service.h"
#include "storage/store.h"

namespace edgestate::server {

int AvailableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

Status RunNode(const ServeConfig& config) {
  // Termination signals are taken synchronously by this thread (sigwait below).
  sigset_t signals = BlockTerminationSignals();

  MetricsRegistry metrics;
  storage::StoreMetrics store_metrics;
  store_metrics.sync_write_seconds = &metrics.AddHistogram(
      "edgestate_fsync_seconds", "Latency of a synced batch write (WAL append + fdatasync).",
      ExponentialBuckets(0.0000625, 2, 16));
  store_metrics.wal_sync_seconds = &metrics.AddHistogram(
      "edgestate_wal_sync_seconds", "Latency of the periodic WAL sync in async durability mode.",
      ExponentialBuckets(0.0000625, 2, 16));

  auto store = storage::Store::Open(config.data_dir, store_metrics);
  if (!store.ok()) return store.status();

  service::CounterServiceOptions svc_options;
  svc_options.region = config.region;
  svc_options.durability = config.durability;
  svc_options.async_sync_interval = std::chrono::milliseconds(config.async_sync_interval_ms);
  auto counters = service::CounterService::Open(store->get(), svc_options, &metrics);
  if (!counters.ok()) return counters.status();
  spdlog::info("loaded {} counters from {} in {} ms", (*counters)->size(), config.data_dir,
               (*counters)->load_time().count());

  // Replication, or the view of a node alone.
  std::unique_ptr<replication::Replicator> replicator;
  replication::SingleNodeView single(config.region);
  const service::ClusterView* cluster = &single;
  if (!config.peer_listen.empty()) {
    replication::ReplicatorOptions ro;
    ro.region = config.region;
    ro.cluster_secret = config.cluster_secret;
    ro.listen = *replication::ParseHostPort(
        config.peer_listen, /*allow_port_zero=*/true);  // Validated with the config.
    ro.peers = *replication::ParsePeers(config.peers, config.region);
    ro.interval = std::chrono::milliseconds(config.replication_interval_ms);
    replicator =
        std::make_unique<replication::Replicator>(std::move(ro), counters->get(), &metrics);
    if (Status s = replicator->Start(); !s.ok()) return s;
    cluster = replicator.get();
  }
  // On every way out of this function the writer stops before the replicator is destroyed:
  // its callbacks post to the replicator's thread.
  struct StopWriter {
    service::CounterService* c;
    ~StopWriter() { c->Stop(); }
  } stop_writer{counters->get()};

  http::Api api(http::ApiOptions{config.region, config.api_key, config.data_dir}, counters->get(),
                cluster, &metrics);
  http::HttpMetrics http_metrics(&metrics);
  http::HttpServerOptions http_options;
  http_options.listen_address = config.listen;
  http_options.port = config.port;
  http_options.threads = config.threads > 0 ? config.threads : AvailableCpus();
  http_options.max_connections = static_cast<size_t>(config.max_connections);
  http_options.request_timeout = std::chrono::milliseconds(config.request_timeout_ms);
  http::HttpServer server(http_options, &api, &http_metrics);
  metrics.AddGauge("edgestate_http_connections", "Open client connections.",
                   [&server] { return static_cast<double>(server.active_connections()); });
  if (Status s = server.Start(); !s.ok()) return s;

  std::printf("edgestate listening on http://%s:%u region=%s data=%s durability=%s peer_port=%u\n",
              config.listen.c_str(), server.port(), config.region.c_str(), config.data_dir.c_str(),
              config.durability == service::Durability::kFsync ? "fsync" : "async",
              replicator ? replicator->peer_port() : 0u);
  std::fflush(stdout);
  spdlog::info("serving region {} on {}:{} with {} I/O threads", config.region, config.listen,
               server.port(), http_options.threads);

  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  spdlog::info("received {}; draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  server.Shutdown();                   // No new requests; in-flight ones finish.
  if (replicator) replicator->Stop();  // Links closed; peers catch up from us on reconnect.
  (*counters)->Stop();                 // Everything queued is committed and synced.
  spdlog::info("shut down cleanly");
  return Status::Ok();
}

}  // namespace edgestate::server
