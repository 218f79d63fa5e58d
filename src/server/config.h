// ServeConfig: everything `edgestate serve` needs, resolved from flags, the environment, a
// TOML file and defaults, in that order of precedence (a flag beats an environment variable,
// which beats the file, which beats the default). Every value is validated here, so the rest
// of the node may trust it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "consistency/consistency.h"
#include "service/keyspace.h"

namespace edgestate::server {

struct ServeConfig {
  std::string listen = "0.0.0.0";
  uint16_t port = 8080;
  std::string region = "local";
  std::string data_dir = "./data";
  service::Durability durability = service::Durability::kFsync;
  std::string api_key;  // Empty: no authentication.
  int threads = 0;      // 0: one per CPU this process may run on.
  int64_t max_connections = 10000;
  // Client writes queued or committing at once, and their bytes; beyond either, 503.
  int64_t max_pending_writes = 4096;
  int64_t max_pending_write_mb = 64;
  // The most writes one group commit answers (0: all that queued); see KeyspaceOptions.
  int64_t max_batch_writes = 64;
  // The writer thread's nice value; see KeyspaceOptions::writer_nice.
  int64_t writer_nice = 10;
  int64_t request_timeout_ms = 15000;
  int64_t async_sync_interval_ms = 100;
  // TLS on the client port (both or neither; reloaded on SIGHUP).
  std::string tls_cert;
  std::string tls_key;
  // HOST:PORT of the private metrics listener: GET /metrics without the API key, for a scraper
  // on the private network (Fly's, Prometheus in the cluster). Empty: none.
  std::string metrics_listen;
  // Replication (all empty: a single node).
  std::string peer_listen;     // HOST:PORT of the replication listener.
  std::string peers;           // REGION=HOST:PORT,...
  std::string cluster_secret;  // Required when peers are given.
  // Peers found by DNS instead of --peers (docs/replication.md): fly:APP or srv:NAME.
  std::string peers_dns;
  int64_t peers_dns_port = 0;  // Port of the peers' listeners; 0: this node's (fly), SRV's (srv).
  int64_t peers_dns_interval_ms = 5000;
  std::string peers_dns_server;  // HOST:PORT of the DNS server; empty: the system's.
  std::string machine_id;        // FLY_MACHINE_ID: how fly discovery recognises this node.
  // Peer link encryption (docs/security.md): all three files switch from the secret's key to
  // certificates; plaintext only when asked for by name.
  std::string peer_tls_cert;
  std::string peer_tls_key;
  std::string peer_tls_ca;
  bool peer_insecure_plaintext = false;
  int64_t replication_interval_ms = 100;
  // Consistency (docs/consistency.md).
  consistency::Level default_consistency = consistency::Level::kLocal;
  int64_t session_wait_ms = 1000;
  bool session_cookie = false;
  int64_t max_clock_error_ms = 10;  // 0: no clock-based bounds.
  // Strong consistency (docs/strong.md): the voter regions (empty: strong is refused).
  std::vector<std::string> strong_voters;
  int64_t strong_timeout_ms = 2000;
  // Keys and the geo cache (docs/keys.md, docs/cache.md).
  int64_t cache_mb = 256;                // Block cache for records read from disk.
  std::string cache_origin;              // http://host[:port][/base]; empty: misses are 404.
  int64_t cache_default_ttl_ms = 60000;  // Fills whose origin names no lifetime.
  int64_t origin_timeout_ms = 5000;
  // The expiry sweep reads at most this many MiB of records per second (0: no bound); see
  // KeyspaceOptions::sweep_bytes_per_sec.
  int64_t sweep_mb_per_s = 8;
};

// Values given on the command line; unset ones fall through to the environment, the file and
// the defaults.
struct ServeFlags {
  std::optional<std::string> config_file;
  std::optional<std::string> listen;
  std::optional<int64_t> port;
  std::optional<std::string> region;
  std::optional<std::string> data_dir;
  std::optional<std::string> durability;
  std::optional<std::string> api_key;
  std::optional<int64_t> threads;
  std::optional<int64_t> max_connections;
  std::optional<int64_t> max_pending_writes;
  std::optional<int64_t> max_pending_write_mb;
  std::optional<int64_t> max_batch_writes;
  std::optional<int64_t> writer_nice;
  std::optional<int64_t> request_timeout_ms;
  std::optional<int64_t> async_sync_interval_ms;
  std::optional<std::string> tls_cert;
  std::optional<std::string> tls_key;
  std::optional<std::string> metrics_listen;
  std::optional<std::string> peer_listen;
  std::optional<std::string> peers;
  std::optional<std::string> peers_dns;
  std::optional<int64_t> peers_dns_port;
  std::optional<int64_t> peers_dns_interval_ms;
  std::optional<std::string> peers_dns_server;
  std::optional<std::string> cluster_secret;
  std::optional<std::string> peer_tls_cert;
  std::optional<std::string> peer_tls_key;
  std::optional<std::string> peer_tls_ca;
  std::optional<bool> peer_insecure_plaintext;
  std::optional<int64_t> replication_interval_ms;
  std::optional<std::string> default_consistency;
  std::optional<int64_t> session_wait_ms;
  std::optional<bool> session_cookie;
  std::optional<int64_t> max_clock_error_ms;
  std::optional<std::string> strong_voters;  // REGION,REGION,...
  std::optional<int64_t> strong_timeout_ms;
  std::optional<int64_t> cache_mb;
  std::optional<std::string> cache_origin;
  std::optional<int64_t> cache_default_ttl_ms;
  std::optional<int64_t> origin_timeout_ms;
  std::optional<int64_t> sweep_mb_per_s;
};

// Returns the value of an environment variable, or nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(const char* name)>;
EnvLookup ProcessEnv();

// Resolves and validates. InvalidArgument with a message naming the offending flag, variable
// or file key (unknown keys in the file are errors too).
StatusOr<ServeConfig> ResolveServeConfig(const ServeFlags& flags, const EnvLookup& env);

// Parses a level allowed as --default-consistency: local, session or strong.
StatusOr<consistency::Level> ParseDefaultConsistency(std::string_view s);

// Parses "fsync" | "async".
StatusOr<service::Durability> ParseDurability(std::string_view s);

}  // namespace edgestate::server
