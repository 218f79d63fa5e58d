// edgestate: the node binary. `edgestate serve` runs one region's node.
// Exit codes: 0 clean shutdown or --help; 1 runtime failure (storage, port); 2 bad usage.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <cstdio>
#include <string_view>

#include "common/strings.h"
#include "demo/demo.h"
#include "env/clock.h"
#include "server/config.h"
#include "server/node.h"

namespace {

constexpr int kExitUsage = 2;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "edgestate: durable, replicated edge state (counters) served over HTTP.\n"
      "One node per region; see README.md and docs/.",
      "edgestate"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "edgestate 0.1.0");

  edgestate::server::ServeFlags flags;
  CLI::App* serve = app.add_subcommand("serve", "Run this region's node until SIGINT/SIGTERM.");
  auto str_opt = [&](const char* name, std::optional<std::string>* dest, const char* help) {
    return serve->add_option_function<std::string>(
        name, [dest](const std::string& v) { *dest = v; }, help);
  };
  auto int_opt = [&](const char* name, std::optional<int64_t>* dest, const char* help) {
    return serve->add_option_function<int64_t>(
        name, [dest](const int64_t& v) { *dest = v; }, help);
  };
  int_opt("--port", &flags.port, "Client HTTP port; 0 picks a free one. Env PORT. Default 8080.");
  str_opt("--listen", &flags.listen, "Address to listen on. Default 0.0.0.0.");
  str_opt("--region", &flags.region,
          "This node's region (a-z0-9-_, up to 32). Env EDGESTATE_REGION, then FLY_REGION. "
          "Default local.");
  str_opt("--data-dir", &flags.data_dir,
          "Directory of the store. Env EDGESTATE_DATA_DIR. "
          "Default ./data.");
  str_opt("--durability", &flags.durability,
          "fsync: acknowledge after fdatasync (group commit). async: acknowledge after the WAL "
          "append, sync every --async-sync-interval-ms. Default fsync.");
  str_opt("--api-key", &flags.api_key,
          "Require 'Authorization: Bearer KEY' on every route but /health. "
          "Env EDGESTATE_API_KEY.");
  str_opt("--config", &flags.config_file,
          "TOML file with the same keys (port, listen, region, data_dir, durability, api_key, "
          "threads, max_connections, max_pending_writes, max_pending_write_mb, max_batch_writes, "
          "writer_nice, "
          "request_timeout_ms, "
          "async_sync_interval_ms, tls_cert, tls_key, metrics_listen, peer_listen, "
          "peers, cluster_secret, peer_tls_cert, peer_tls_key, peer_tls_ca, "
          "peer_insecure_plaintext, replication_interval_ms, default_consistency, session_wait_ms, "
          "session_cookie, max_clock_error_ms, strong_voters, strong_timeout_ms, cache_mb, "
          "cache_origin, cache_default_ttl_ms, origin_timeout_ms, sweep_mb_per_s). Precedence: "
          "flag > environment > file > default.");
  int_opt("--threads", &flags.threads, "I/O threads; 0 = one per CPU available. Default 0.");
  int_opt("--max-connections", &flags.max_connections,
          "Open client connections allowed; beyond it new ones get 503. Default 10000.");
  int_opt("--max-pending-writes", &flags.max_pending_writes,
          "Client writes waiting to commit at once; beyond it a write gets 503 overloaded with "
          "Retry-After at once instead of queueing. Default 4096.");
  int_opt("--max-pending-write-mb", &flags.max_pending_write_mb,
          "The same bound on the bytes those writes carry (names and values). Default 64.");
  int_opt("--max-batch-writes", &flags.max_batch_writes,
          "The most writes one group commit takes; the rest wait for the next. Smaller batches "
          "answer fewer writes at once, so reads wait less behind a write flood. 0: no bound. "
          "Default 64.");
  int_opt("--writer-nice", &flags.writer_nice,
          "Nice value of the thread that commits writes (0-19): when the CPU is saturated, "
          "reads go before commits, so a write flood slows writes rather than reads. 0: the "
          "process's own. Default 10.");
  int_opt("--request-timeout-ms", &flags.request_timeout_ms,
          "A whole request (and keep-alive idle time) must arrive within this. Default 15000.");
  int_opt("--async-sync-interval-ms", &flags.async_sync_interval_ms,
          "With --durability async: how often the WAL is synced. Default 100.");
  str_opt("--tls-cert", &flags.tls_cert,
          "PEM certificate chain (leaf first): serve the client port over TLS 1.2/1.3. With "
          "--tls-key; both files are read again on SIGHUP (docs/security.md).");
  str_opt("--tls-key", &flags.tls_key, "PEM private key of --tls-cert.");
  str_opt("--metrics-listen", &flags.metrics_listen,
          "HOST:PORT of a listener that serves only GET /metrics, without the API key: for a "
          "scraper on the private network. Port 0 picks a free one. Default none.");
  str_opt("--peer-listen", &flags.peer_listen,
          "HOST:PORT of the replication listener (private network), separate from --port.");
  str_opt("--peers", &flags.peers,
          "The other regions' replication listeners: REGION=HOST:PORT,...");
  str_opt("--peers-dns", &flags.peers_dns,
          "Find the peers by DNS instead of --peers, re-resolved every --peers-dns-interval-ms: "
          "fly:APP (Fly.io's vms.APP.internal TXT and ID.vm.APP.internal AAAA records; this "
          "node is known by FLY_MACHINE_ID or its region) or srv:NAME (SRV records whose "
          "targets are APP-REGION-ORDINAL pods, as deploy/k8s names them).");
  int_opt("--peers-dns-port", &flags.peers_dns_port,
          "Port of the peers' replication listeners. Default: this node's --peer-listen port "
          "(fly), the SRV record's port (srv).");
  int_opt("--peers-dns-interval-ms", &flags.peers_dns_interval_ms,
          "MS between resolutions of --peers-dns. Default 5000.");
  str_opt("--peers-dns-server", &flags.peers_dns_server,
          "HOST:PORT of the DNS server --peers-dns asks. Default: the system's resolvers.");
  str_opt("--cluster-secret", &flags.cluster_secret,
          "Shared secret authenticating peer links (at least 8 bytes); required with --peers. "
          "Env EDGESTATE_CLUSTER_SECRET.");
  str_opt("--peer-tls-cert", &flags.peer_tls_cert,
          "PEM certificate chain this node presents on peer links. With --peer-tls-key and "
          "--peer-tls-ca, links use mutually verified certificates instead of the key derived "
          "from the cluster secret (docs/security.md).");
  str_opt("--peer-tls-key", &flags.peer_tls_key, "PEM private key of --peer-tls-cert.");
  str_opt("--peer-tls-ca", &flags.peer_tls_ca,
          "PEM CA certificates: a peer is accepted only with a certificate they signed.");
  serve->add_flag_function(
      "--peer-insecure-plaintext", [&flags](int64_t n) { flags.peer_insecure_plaintext = n > 0; },
      "Send peer links unencrypted (every node of the cluster must say so). Only for networks "
      "where nobody else can read or write.");
  int_opt("--replication-interval", &flags.replication_interval_ms,
          "MS between delta shipments and heartbeats to each peer; 0 ships every commit at "
          "once. Default 100.");
  str_opt("--default-consistency", &flags.default_consistency,
          "Level of requests that name none: local, session or strong (docs/consistency.md). "
          "Default local.");
  int_opt("--session-wait-ms", &flags.session_wait_ms,
          "How long a session or bounded request may wait for this node to catch up before "
          "503. Default 1000.");
  int_opt("--max-clock-error-ms", &flags.max_clock_error_ms,
          "How far apart the nodes' wall clocks may be. Watermarks of a peer whose measured "
          "offset is within it tighten the staleness bound; 0 turns that off. Default 10.");
  str_opt("--strong-voters", &flags.strong_voters,
          "REGION,REGION,REGION (3 or 5, the same list in the same order on every node; the "
          "first leads counters written through several voters): the regions that run "
          "consensus for consistency=strong (docs/strong.md). Default none: strong is refused.");
  int_opt("--strong-timeout-ms", &flags.strong_timeout_ms,
          "A strong operation that cannot reach a majority of the voters fails with 503 "
          "strong_unavailable after this. Default 2000.");
  int_opt("--cache-mb", &flags.cache_mb,
          "Memory (MiB) for caches: five eighths for RocksDB's block cache (data, index and "
          "filter blocks, the write buffers), three eighths for the record cache of hot keys "
          "and cache entries. Default 256.");
  str_opt("--cache-origin", &flags.cache_origin,
          "http://HOST[:PORT][/BASE]: a GET /v1/cache/{key} that misses fetches BASE/{key} from "
          "this origin and caches it (docs/cache.md). Default none: a miss is 404.");
  int_opt("--cache-default-ttl-ms", &flags.cache_default_ttl_ms,
          "How long a fill is cached when the origin's Cache-Control names no max-age or "
          "s-maxage; 0: such responses are not cached. Default 60000.");
  int_opt("--origin-timeout-ms", &flags.origin_timeout_ms,
          "An origin fetch that has not completed in this time answers 504. Default 5000.");
  int_opt("--sweep-mb-per-s", &flags.sweep_mb_per_s,
          "The sweep that drops expired keys and collected tombstones reads every stored key "
          "and cache entry, pass after pass; it reads at most this many MiB of them per second "
          "(docs/storage.md). 0: no bound. Default 8.");
  serve->add_flag_function(
      "--session-cookie", [&flags](int64_t n) { flags.session_cookie = n > 0; },
      "Also keep the session token in the cookie edgestate_session (HttpOnly, SameSite=Lax).");
  // Every serve flag can come from the environment too, --max-connections from
  // EDGESTATE_MAX_CONNECTIONS (how containers are configured; deploy/). A flag beats its
  // variable; both beat the --config file. A bad value is refused like the flag's (exit 2).
  for (CLI::Option* opt : serve->get_options()) {
    if (opt == serve->get_help_ptr() || opt->get_lnames().empty()) continue;
    std::string env = "EDGESTATE_";
    for (char c : opt->get_lnames().front()) {
      env.push_back(c == '-' ? '_'
                             : static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    }
    opt->envname(env);
  }

  edgestate::demo::DemoOptions demo_options;
  std::string demo_regions;
  CLI::App* demo = app.add_subcommand(
      "demo",
      "Run the article's eight regions on this machine: one node per region, replicating over "
      "an emulated WAN (RTT model), until SIGINT/SIGTERM.");
  demo->add_option("--base-port", demo_options.base_port,
                   "Region i (in --regions order) serves clients on BASE+i. Default 8080.");
  demo->add_option("--data-dir", demo_options.data_dir,
                   "One folder holding every region's data and log. Default ./demo-data.");
  demo->add_option("--regions", demo_regions,
                   "Comma-separated regions. Default iad,sjc,lhr,fra,nrt,syd,gru,jnb.");
  demo->add_option(
      "--rtt-file", demo_options.rtt_file,
      "RTT model CSV (the shape of tools/netem/rtt-8-regions.csv). Default: that file, "
      "compiled in.");
  demo->add_option("--replication-interval", demo_options.replication_interval_ms,
                   "MS between delta shipments. Default 100.");
  demo->add_option("--jitter-ms", demo_options.jitter_ms,
                   "Extra uniform delay per chunk in [0, J] ms on every link (never reorders). "
                   "Default 0.");
  demo->add_option("--control-port", demo_options.control_port,
                   "Port of the WAN control interface on 127.0.0.1. Default BASE+100.");
  demo->add_option("--node-arg", demo_options.node_args,
                   "An extra argument for every region's `edgestate serve` (repeatable; e.g. "
                   "--node-arg=--max-clock-error-ms=20).");
  std::string demo_voters;
  auto* voters_opt = demo->add_option(
      "--strong-voters", demo_voters,
      "REGION,REGION,REGION: the strong voters of every node (docs/strong.md); 'none' for "
      "none. Default lhr,fra,iad (when all three run; the first leads shared counters).");
  std::vector<std::string> demo_offsets;
  demo->add_option("--clock-offset", demo_offsets,
                   "REGION=MS: run that region's node with its wall clock MS off (repeatable).");

  edgestate::demo::WanOptions wan_options;
  std::string wan_regions;
  std::vector<std::string> wan_targets;
  CLI::App* wan = app.add_subcommand(
      "wan",
      "Run the WAN emulator alone: a delaying TCP proxy per directed link between regions, "
      "with a control interface to cut and heal links, until SIGINT/SIGTERM.");
  wan->add_option("--regions", wan_regions, "Comma-separated regions. Default: all in the model.");
  wan->add_option("--rtt-file", wan_options.rtt_file, "RTT model CSV. Default: the shipped one.");
  wan->add_option("--target", wan_targets,
                  "REGION=HOST:PORT: where links into REGION lead (repeatable).");
  wan->add_option("--jitter-ms", wan_options.jitter_ms, "Extra uniform delay in [0, J] ms.");
  wan->add_option("--control-port", wan_options.control_port,
                  "Port of the control interface on 127.0.0.1. Default: a free one.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "edgestate: %s\nRun 'edgestate --help' or 'edgestate serve --help'.\n",
                 e.what());
    return kExitUsage;
  }

  if (wan->parsed()) {
    wan_options.regions = edgestate::SplitList(wan_regions);
    for (const auto& t : wan_targets) {
      size_t eq = t.find('=');
      if (eq == std::string::npos) {
        std::fprintf(stderr, "edgestate wan: target \"%s\" is not REGION=HOST:PORT\n", t.c_str());
        return kExitUsage;
      }
      wan_options.targets.emplace_back(t.substr(0, eq), t.substr(eq + 1));
    }
    spdlog::set_default_logger(spdlog::stderr_color_mt("edgestate"));
    edgestate::Status s = edgestate::demo::RunWan(wan_options);
    if (!s.ok()) {
      std::fprintf(stderr, "edgestate wan: %s\n", s.message().c_str());
      return s.code() == edgestate::StatusCode::kInvalidArgument ? kExitUsage : 1;
    }
    return 0;
  }
  if (demo->parsed()) {
    if (!demo_regions.empty()) demo_options.regions = edgestate::SplitList(demo_regions);
    if (voters_opt->count() > 0) {
      demo_options.strong_voters =
          demo_voters == "none" ? std::vector<std::string>{} : edgestate::SplitList(demo_voters);
    }
    for (const std::string& item : demo_offsets) {
      size_t eq = item.find('=');
      std::optional<int64_t> ms = eq == std::string::npos
                                      ? std::nullopt
                                      : edgestate::ParseClockOffsetMs(item.substr(eq + 1).c_str());
      if (!ms) {
        std::fprintf(stderr, "edgestate demo: --clock-offset %s: expected REGION=MS\n",
                     item.c_str());
        return kExitUsage;
      }
      demo_options.clock_offsets_ms[item.substr(0, eq)] = *ms;
    }
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    demo_options.edgestate_binary = n > 0 ? std::string(self, n) : std::string(argv[0]);
    if (edgestate::Status s = edgestate::demo::ValidateDemoOptions(demo_options); !s.ok()) {
      std::fprintf(stderr, "edgestate demo: %s\n", s.message().c_str());
      return kExitUsage;
    }
    spdlog::set_default_logger(spdlog::stderr_color_mt("edgestate"));
    edgestate::Status s = edgestate::demo::RunDemo(demo_options);
    if (!s.ok()) {
      std::fprintf(stderr, "edgestate demo: %s\n", s.ToString().c_str());
      return 1;
    }
    return 0;
  }
  if (serve->parsed()) {
    auto config = edgestate::server::ResolveServeConfig(flags, edgestate::server::ProcessEnv());
    if (!config.ok()) {
      std::fprintf(stderr, "edgestate serve: %s\n", config.status().message().c_str());
      return kExitUsage;
    }
    // Logs go to stderr; stdout carries only the "listening" line that scripts wait for.
    spdlog::set_default_logger(spdlog::stderr_color_mt("edgestate"));
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
    edgestate::Status s = edgestate::server::RunNode(*config);
    if (!s.ok()) {
      spdlog::error("edgestate serve: {}", s.ToString());
      return 1;
    }
  }
  return 0;
}
