#include "server/config.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>

#include "common/region.h"
#include "common/strings.h"
#include "http/origin.h"
#include "replication/discovery.h"
#include "replication/peers.h"
#include "strong/strong_service.h"

namespace edgestate::server {

EnvLookup ProcessEnv() {
  return [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

StatusOr<service::Durability> ParseDurability(std::string_view s) {
  if (s == "fsync") return service::Durability::kFsync;
  if (s == "async") return service::Durability::kAsync;
  return Status::InvalidArgument(fmt::format("durability must be fsync or async, not \"{}\"", s));
}

namespace {

StatusOr<int64_t> ParseInt(std::string_view s, std::string_view what) {
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || s.empty()) {
    return Status::InvalidArgument(fmt::format("{} must be an integer, not \"{}\"", what, s));
  }
  return v;
}

Status CheckRange(int64_t v, int64_t lo, int64_t hi, std::string_view what) {
  if (v < lo || v > hi) {
    return Status::InvalidArgument(
        fmt::format("{} must be between {} and {}, not {}", what, lo, hi, v));
  }
  return Status::Ok();
}

Status ValidateApiKey(std::string_view k) {
  if (k.size() > 512) return Status::InvalidArgument("api key is longer than 512 bytes");
  for (unsigned char c : k) {
    if (c <= 0x20 || c >= 0x7f) {
      return Status::InvalidArgument("api key must be printable ASCII without spaces");
    }
  }
  return Status::Ok();
}

// Applies the TOML file's keys onto `cfg`.
Status ApplyFile(const std::string& path, ServeConfig* cfg) {
  toml::table t;
  try {
    t = toml::parse_file(path);  // Debian's toml++ is built with exceptions.
  } catch (const toml::parse_error& err) {
    return Status::InvalidArgument(fmt::format("config file {}: {} (line {}, column {})", path,
                                               err.description(), err.source().begin.line,
                                               err.source().begin.column));
  }
  for (auto&& entry : t) {
    // Named, not a structured binding: clang 14 (the fuzz build) cannot capture those.
    const toml::key& key = entry.first;
    const toml::node& node = entry.second;
    std::string_view k = key.str();
    auto want_string = [&](std::string* out) -> Status {
      if (auto v = node.value<std::string>(); v && node.is_string()) {
        *out = *v;
        return Status::Ok();
      }
      return Status::InvalidArgument(fmt::format("config file {}: {} must be a string", path, k));
    };
    auto want_int = [&](int64_t* out) -> Status {
      if (node.is_integer()) {
        *out = *node.value<int64_t>();
        return Status::Ok();
      }
      return Status::InvalidArgument(fmt::format("config file {}: {} must be an integer", path, k));
    };
    Status s;
    int64_t i = 0;
    std::string str;
    if (k == "listen") {
      s = want_string(&cfg->listen);
    } else if (k == "port") {
      s = want_int(&i);
      if (s.ok()) s = CheckRange(i, 0, 65535, "config key port");
      if (s.ok()) cfg->port = static_cast<uint16_t>(i);
    } else if (k == "region") {
      s = want_string(&cfg->region);
    } else if (k == "data_dir") {
      s = want_string(&cfg->data_dir);
    } else if (k == "durability") {
      s = want_string(&str);
      if (s.ok()) {
        auto d = ParseDurability(str);
        if (d.ok())
          cfg->durability = *d;
        else
          s = d.status();
      }
    } else if (k == "api_key") {
      s = want_string(&cfg->api_key);
    } else if (k == "threads") {
      s = want_int(&i);
      if (s.ok()) cfg->threads = static_cast<int>(std::clamp<int64_t>(i, -1, 1 << 20));
    } else if (k == "max_connections") {
      s = want_int(&cfg->max_connections);
    } else if (k == "max_pending_writes") {
      s = want_int(&cfg->max_pending_writes);
    } else if (k == "max_pending_write_mb") {
      s = want_int(&cfg->max_pending_write_mb);
    } else if (k == "max_batch_writes") {
      s = want_int(&cfg->max_batch_writes);
    } else if (k == "writer_nice") {
      s = want_int(&cfg->writer_nice);
    } else if (k == "request_timeout_ms") {
      s = want_int(&cfg->request_timeout_ms);
    } else if (k == "async_sync_interval_ms") {
      s = want_int(&cfg->async_sync_interval_ms);
    } else if (k == "metrics_listen") {
      s = want_string(&cfg->metrics_listen);
    } else if (k == "peer_listen") {
      s = want_string(&cfg->peer_listen);
    } else if (k == "peers") {
      if (node.is_array()) {
        std::string joined;
        for (const auto& item : *node.as_array()) {
          if (!item.is_string()) {
            s = Status::InvalidArgument(
                fmt::format("config file {}: peers must be strings REGION=HOST:PORT", path));
            break;
          }
          if (!joined.empty()) joined += ",";
          joined += *item.value<std::string>();
        }
        cfg->peers = joined;
      } else {
        s = want_string(&cfg->peers);
      }
    } else if (k == "peers_dns") {
      s = want_string(&cfg->peers_dns);
    } else if (k == "peers_dns_port") {
      s = want_int(&cfg->peers_dns_port);
    } else if (k == "peers_dns_interval_ms") {
      s = want_int(&cfg->peers_dns_interval_ms);
    } else if (k == "peers_dns_server") {
      s = want_string(&cfg->peers_dns_server);
    } else if (k == "cluster_secret") {
      s = want_string(&cfg->cluster_secret);
    } else if (k == "replication_interval_ms") {
      s = want_int(&cfg->replication_interval_ms);
    } else if (k == "default_consistency") {
      s = want_string(&str);
      if (s.ok()) {
        auto l = ParseDefaultConsistency(str);
        if (l.ok())
          cfg->default_consistency = *l;
        else
          s = Status::InvalidArgument(
              fmt::format("config file {}: default_consistency: {}", path, l.status().message()));
      }
    } else if (k == "max_clock_error_ms") {
      s = want_int(&cfg->max_clock_error_ms);
    } else if (k == "session_wait_ms") {
      s = want_int(&cfg->session_wait_ms);
    } else if (k == "strong_timeout_ms") {
      s = want_int(&cfg->strong_timeout_ms);
    } else if (k == "cache_mb") {
      s = want_int(&cfg->cache_mb);
    } else if (k == "cache_origin") {
      s = want_string(&cfg->cache_origin);
    } else if (k == "cache_default_ttl_ms") {
      s = want_int(&cfg->cache_default_ttl_ms);
    } else if (k == "origin_timeout_ms") {
      s = want_int(&cfg->origin_timeout_ms);
    } else if (k == "sweep_mb_per_s") {
      s = want_int(&cfg->sweep_mb_per_s);
    } else if (k == "strong_voters") {
      if (node.is_array()) {
        cfg->strong_voters.clear();
        for (const auto& item : *node.as_array()) {
          if (!item.is_string()) {
            s = Status::InvalidArgument(
                fmt::format("config file {}: strong_voters must be region names", path));
            break;
          }
          cfg->strong_voters.push_back(*item.value<std::string>());
        }
      } else {
        s = want_string(&str);
        if (s.ok()) cfg->strong_voters = SplitList(str);
      }
    } else if (k == "session_cookie" || k == "peer_insecure_plaintext") {
      if (node.is_boolean()) {
        (k == "session_cookie" ? cfg->session_cookie : cfg->peer_insecure_plaintext) =
            *node.value<bool>();
      } else {
        s = Status::InvalidArgument(
            fmt::format("config file {}: {} must be true or false", path, k));
      }
    } else if (k == "tls_cert") {
      s = want_string(&cfg->tls_cert);
    } else if (k == "tls_key") {
      s = want_string(&cfg->tls_key);
    } else if (k == "peer_tls_cert") {
      s = want_string(&cfg->peer_tls_cert);
    } else if (k == "peer_tls_key") {
      s = want_string(&cfg->peer_tls_key);
    } else if (k == "peer_tls_ca") {
      s = want_string(&cfg->peer_tls_ca);
    } else {
      s = Status::InvalidArgument(fmt::format("config file {}: unknown key \"{}\"", path, k));
    }
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

}  // namespace

StatusOr<consistency::Level> ParseDefaultConsistency(std::string_view s) {
  auto l = consistency::ParseLevel(s);
  if (!l.ok()) return l.status();
  if (*l == consistency::Level::kBounded) {
    return Status::InvalidArgument(
        "bounded cannot be the default (each request names its max_staleness_ms); use local, "
        "session or strong");
  }
  return *l;
}

StatusOr<ServeConfig> ResolveServeConfig(const ServeFlags& flags, const EnvLookup& env) {
  ServeConfig cfg;
  if (flags.config_file) {
    if (Status s = ApplyFile(*flags.config_file, &cfg); !s.ok()) return s;
  }

  // Environment (beats the file).
  if (auto v = env("PORT")) {
    auto p = ParseInt(*v, "PORT");
    if (!p.ok()) return p.status();
    if (Status s = CheckRange(*p, 0, 65535, "PORT"); !s.ok()) return s;
    cfg.port = static_cast<uint16_t>(*p);
  }
  if (auto v = env("EDGESTATE_REGION")) {
    cfg.region = *v;
  } else if (auto f = env("FLY_REGION")) {
    cfg.region = *f;
  }
  if (auto v = env("EDGESTATE_DATA_DIR")) cfg.data_dir = *v;
  if (auto v = env("EDGESTATE_API_KEY")) cfg.api_key = *v;
  if (auto v = env("EDGESTATE_CLUSTER_SECRET")) cfg.cluster_secret = *v;

  // Flags (beat everything).
  if (flags.listen) cfg.listen = *flags.listen;
  if (flags.port) {
    if (Status s = CheckRange(*flags.port, 0, 65535, "--port"); !s.ok()) return s;
    cfg.port = static_cast<uint16_t>(*flags.port);
  }
  if (flags.region) cfg.region = *flags.region;
  if (flags.data_dir) cfg.data_dir = *flags.data_dir;
  if (flags.durability) {
    auto d = ParseDurability(*flags.durability);
    if (!d.ok()) return d.status();
    cfg.durability = *d;
  }
  if (flags.api_key) cfg.api_key = *flags.api_key;
  if (flags.threads)
    cfg.threads = static_cast<int>(std::clamp<int64_t>(*flags.threads, -1, 1 << 20));
  if (flags.max_connections) cfg.max_connections = *flags.max_connections;
  if (flags.max_pending_writes) cfg.max_pending_writes = *flags.max_pending_writes;
  if (flags.max_pending_write_mb) cfg.max_pending_write_mb = *flags.max_pending_write_mb;
  if (flags.max_batch_writes) cfg.max_batch_writes = *flags.max_batch_writes;
  if (flags.writer_nice) cfg.writer_nice = *flags.writer_nice;
  if (flags.request_timeout_ms) cfg.request_timeout_ms = *flags.request_timeout_ms;
  if (flags.async_sync_interval_ms) cfg.async_sync_interval_ms = *flags.async_sync_interval_ms;
  if (flags.tls_cert) cfg.tls_cert = *flags.tls_cert;
  if (flags.tls_key) cfg.tls_key = *flags.tls_key;
  if (flags.peer_listen) cfg.peer_listen = *flags.peer_listen;
  if (flags.metrics_listen) cfg.metrics_listen = *flags.metrics_listen;
  if (flags.peers) cfg.peers = *flags.peers;
  if (flags.peers_dns) cfg.peers_dns = *flags.peers_dns;
  if (flags.peers_dns_port) cfg.peers_dns_port = *flags.peers_dns_port;
  if (flags.peers_dns_interval_ms) cfg.peers_dns_interval_ms = *flags.peers_dns_interval_ms;
  if (flags.peers_dns_server) cfg.peers_dns_server = *flags.peers_dns_server;
  if (auto id = env("FLY_MACHINE_ID")) cfg.machine_id = *id;
  if (flags.cluster_secret) cfg.cluster_secret = *flags.cluster_secret;
  if (flags.peer_tls_cert) cfg.peer_tls_cert = *flags.peer_tls_cert;
  if (flags.peer_tls_key) cfg.peer_tls_key = *flags.peer_tls_key;
  if (flags.peer_tls_ca) cfg.peer_tls_ca = *flags.peer_tls_ca;
  if (flags.peer_insecure_plaintext) cfg.peer_insecure_plaintext = *flags.peer_insecure_plaintext;
  if (flags.replication_interval_ms) cfg.replication_interval_ms = *flags.replication_interval_ms;
  if (flags.default_consistency) {
    auto l = ParseDefaultConsistency(*flags.default_consistency);
    if (!l.ok()) return Status::InvalidArgument("--default-consistency: " + l.status().message());
    cfg.default_consistency = *l;
  }
  if (flags.session_wait_ms) cfg.session_wait_ms = *flags.session_wait_ms;
  if (flags.session_cookie) cfg.session_cookie = *flags.session_cookie;
  if (flags.max_clock_error_ms) cfg.max_clock_error_ms = *flags.max_clock_error_ms;
  if (flags.strong_voters) cfg.strong_voters = SplitList(*flags.strong_voters);
  if (flags.strong_timeout_ms) cfg.strong_timeout_ms = *flags.strong_timeout_ms;
  if (flags.cache_mb) cfg.cache_mb = *flags.cache_mb;
  if (flags.cache_origin) cfg.cache_origin = *flags.cache_origin;
  if (flags.cache_default_ttl_ms) cfg.cache_default_ttl_ms = *flags.cache_default_ttl_ms;
  if (flags.origin_timeout_ms) cfg.origin_timeout_ms = *flags.origin_timeout_ms;
  if (flags.sweep_mb_per_s) cfg.sweep_mb_per_s = *flags.sweep_mb_per_s;

  // Validation of the merged result.
  if (Status s = ValidateRegionName(cfg.region); !s.ok()) return s;
  if (Status s = ValidateApiKey(cfg.api_key); !s.ok()) return s;
  if (cfg.data_dir.empty()) return Status::InvalidArgument("data dir must not be empty");
  {
    unsigned char buf[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, cfg.listen.c_str(), buf) != 1 &&
        inet_pton(AF_INET6, cfg.listen.c_str(), buf) != 1) {
      return Status::InvalidArgument(
          fmt::format("listen address \"{}\" is not an IPv4 or IPv6 address", cfg.listen));
    }
  }
  if (Status s = CheckRange(cfg.threads, 0, 256, "threads"); !s.ok()) return s;
  if (Status s = CheckRange(cfg.max_connections, 1, 1'000'000, "max connections"); !s.ok())
    return s;
  if (Status s = CheckRange(cfg.max_pending_writes, 1, 10'000'000, "max pending writes"); !s.ok()) {
    return s;
  }
  if (Status s = CheckRange(cfg.max_pending_write_mb, 1, 1 << 20, "max pending write (MB)");
      !s.ok()) {
    return s;
  }
  if (Status s = CheckRange(cfg.max_batch_writes, 0, 1'000'000, "max batch writes"); !s.ok()) {
    return s;
  }
  if (Status s = CheckRange(cfg.writer_nice, 0, 19, "writer nice"); !s.ok()) return s;
  if (Status s = CheckRange(cfg.request_timeout_ms, 10, 3'600'000, "request timeout (ms)");
      !s.ok()) {
    return s;
  }
  if (Status s = CheckRange(cfg.async_sync_interval_ms, 1, 60'000, "async sync interval (ms)");
      !s.ok()) {
    return s;
  }
  if (Status s = CheckRange(cfg.replication_interval_ms, 0, 60'000, "replication interval (ms)");
      !s.ok()) {
    return s;
  }
  if (Status s = CheckRange(cfg.session_wait_ms, 0, 60'000, "session wait (ms)"); !s.ok()) {
    return s;
  }
  if (Status s = CheckRange(cfg.max_clock_error_ms, 0, 60'000, "max clock error (ms)"); !s.ok()) {
    return s;
  }
  if (Status s = CheckRange(cfg.strong_timeout_ms, 10, 600'000, "strong timeout (ms)"); !s.ok()) {
    return s;
  }
  if (Status s = CheckRange(cfg.cache_mb, 8, 1 << 20, "cache size (MB)"); !s.ok()) return s;
  if (Status s = CheckRange(cfg.sweep_mb_per_s, 0, 1 << 20, "sweep read rate (MB/s)"); !s.ok()) {
    return s;
  }
  if (Status s = CheckRange(cfg.cache_default_ttl_ms, 0, 30LL * 24 * 3600 * 1000,
                            "cache default TTL (ms)");
      !s.ok()) {
    return s;
  }
  if (Status s = CheckRange(cfg.origin_timeout_ms, 10, 600'000, "origin timeout (ms)"); !s.ok()) {
    return s;
  }
  if (!cfg.cache_origin.empty()) {
    if (auto u = http::ParseOriginUrl(cfg.cache_origin); !u.ok()) {
      return Status::InvalidArgument("cache origin: " + u.status().message());
    }
  }
  if (!cfg.metrics_listen.empty()) {
    auto hp = replication::ParseHostPort(cfg.metrics_listen, /*allow_port_zero=*/true);
    if (!hp.ok()) {
      return Status::InvalidArgument("metrics listen address: " + hp.status().message());
    }
  }
  if (!cfg.peer_listen.empty()) {
    auto hp = replication::ParseHostPort(cfg.peer_listen, /*allow_port_zero=*/true);
    if (!hp.ok()) return Status::InvalidArgument("peer listen address: " + hp.status().message());
  }
  auto peers = replication::ParsePeers(cfg.peers, cfg.region);
  if (!peers.ok()) return Status::InvalidArgument("peers: " + peers.status().message());
  if (!cfg.peers_dns.empty()) {
    if (!peers->empty()) {
      return Status::InvalidArgument("--peers and --peers-dns exclude each other: give one");
    }
    auto spec = replication::ParseDiscoverySpec(cfg.peers_dns);
    if (!spec.ok()) return Status::InvalidArgument("--peers-dns: " + spec.status().message());
    if (Status s = CheckRange(cfg.peers_dns_port, 0, 65535, "--peers-dns-port"); !s.ok()) return s;
    if (Status s = CheckRange(cfg.peers_dns_interval_ms, 100, 3'600'000, "--peers-dns-interval-ms");
        !s.ok()) {
      return s;
    }
    if (spec->kind == replication::DiscoverySpec::Kind::kFly && cfg.peers_dns_port == 0 &&
        !cfg.peer_listen.empty()) {
      auto hp = replication::ParseHostPort(cfg.peer_listen, /*allow_port_zero=*/true);
      if (hp.ok() && hp->port == 0) {
        return Status::InvalidArgument(
            "--peers-dns fly: peers listen on this node's peer port, which --peer-listen leaves "
            "to chance (port 0): give a port, or --peers-dns-port");
      }
    }
    if (!cfg.peers_dns_server.empty()) {
      auto hp = replication::ParseHostPort(cfg.peers_dns_server);
      if (!hp.ok()) return Status::InvalidArgument("--peers-dns-server: " + hp.status().message());
    }
  }
  if (!peers->empty() || !cfg.peers_dns.empty()) {
    if (cfg.peer_listen.empty()) {
      return Status::InvalidArgument("peers are given but --peer-listen is not");
    }
    if (cfg.cluster_secret.empty()) {
      return Status::InvalidArgument(
          "peers are given but no cluster secret (--cluster-secret or EDGESTATE_CLUSTER_SECRET)");
    }
  }
  if (cfg.tls_cert.empty() != cfg.tls_key.empty()) {
    return Status::InvalidArgument("--tls-cert and --tls-key go together (both or neither)");
  }
  {
    const int tls_files =
        !cfg.peer_tls_cert.empty() + !cfg.peer_tls_key.empty() + !cfg.peer_tls_ca.empty();
    if (tls_files != 0 && tls_files != 3) {
      return Status::InvalidArgument(
          "--peer-tls-cert, --peer-tls-key and --peer-tls-ca go together (all three or none)");
    }
    if (tls_files == 3 && cfg.peer_insecure_plaintext) {
      return Status::InvalidArgument(
          "--peer-insecure-plaintext contradicts --peer-tls-cert/--peer-tls-key/--peer-tls-ca");
    }
  }
  {
    std::vector<std::string> peer_regions;
    for (const auto& p : *peers) peer_regions.push_back(p.region);
    // Peers found by DNS are not known yet: any voter may be one.
    if (!cfg.peers_dns.empty()) peer_regions = cfg.strong_voters;
    if (Status s = strong::ValidateVoters(cfg.strong_voters, cfg.region, peer_regions); !s.ok()) {
      return s;
    }
  }
  if (!cfg.cluster_secret.empty()) {
    if (cfg.cluster_secret.size() < 8) {
      return Status::InvalidArgument("cluster secret must be at least 8 bytes");
    }
    if (Status s = ValidateApiKey(cfg.cluster_secret); !s.ok()) {
      return Status::InvalidArgument("cluster secret must be printable ASCII without spaces");
    }
  }
  return cfg;
}

}  // namespace edgestate::server
