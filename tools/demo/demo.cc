#include "demo/demo.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "common/metrics.h"
#include "demo/process.h"
#include "env/signals.h"
#include "http/http_metrics.h"
#include "http/server.h"
#include "netem/control.h"
#include "netem/rtt_model.h"
#include "netem/wan.h"
#include "replication/peers.h"

namespace edgestate::demo {
namespace {

StatusOr<netem::RttModel> LoadModel(const DemoOptions& o) {
  return netem::RttModel::LoadOrDefault(o.rtt_file);
}

std::string RandomSecret() {
  std::random_device rd;
  return fmt::format("demo-{:016x}{:016x}", (uint64_t{rd()} << 32) | rd(),
                     (uint64_t{rd()} << 32) | rd());
}

}  // namespace

Status ValidateDemoOptions(const DemoOptions& o) {
  auto model = LoadModel(o);
  if (!model.ok()) return Status::InvalidArgument(model.status().message());
  if (o.regions.empty()) return Status::InvalidArgument("no regions");
  std::set<std::string> seen;
  for (const auto& r : o.regions) {
    if (!model->Has(r)) {
      return Status::InvalidArgument(fmt::format("region {} is not in the RTT model", r));
    }
    if (!seen.insert(r).second) return Status::InvalidArgument("region " + r + " listed twice");
  }
  if (o.base_port == 0 || o.base_port + o.regions.size() > 65535) {
    return Status::InvalidArgument("base port leaves no room for every region");
  }
  if (o.replication_interval_ms < 0 || o.replication_interval_ms > 60000) {
    return Status::InvalidArgument("replication interval must be 0..60000 ms");
  }
  if (o.jitter_ms < 0 || o.jitter_ms > 1000)
    return Status::InvalidArgument("jitter must be 0..1000 ms");
  if (o.strong_voters) {
    const auto& v = *o.strong_voters;
    if (!v.empty() && v.size() != 3 && v.size() != 5) {
      return Status::InvalidArgument("--strong-voters must name 3 or 5 regions (or none)");
    }
    std::set<std::string> voters;
    for (const auto& r : v) {
      if (!seen.count(r)) return Status::InvalidArgument("strong voter " + r + " is not run");
      if (!voters.insert(r).second) return Status::InvalidArgument("strong voter " + r + " twice");
    }
  }
  for (const auto& [r, ms] : o.clock_offsets_ms) {
    if (!seen.count(r)) return Status::InvalidArgument("clock offset for region " + r + " not run");
    if (ms < -86'400'000 || ms > 86'400'000) {
      return Status::InvalidArgument("clock offset must be within +-86400000 ms");
    }
  }
  return Status::Ok();
}

std::vector<std::string> DemoVoters(const DemoOptions& o) {
  if (o.strong_voters) return *o.strong_voters;
  // lhr leads: the lhr-fra quorum is the tightest pair in the model (docs/strong.md).
  const std::vector<std::string> preferred = {"lhr", "fra", "iad"};
  for (const auto& v : preferred) {
    if (std::find(o.regions.begin(), o.regions.end(), v) == o.regions.end()) return {};
  }
  return preferred;
}

Status RunDemo(const DemoOptions& o) {
  if (Status s = ValidateDemoOptions(o); !s.ok()) return s;
  sigset_t signals = BlockTerminationSignals(/*with_sigchld=*/true);

  netem::RttModel model = *LoadModel(o);
  netem::WanEmulator wan(o.listen);
  if (Status s = netem::AddMesh(&wan, model, o.regions, o.jitter_ms); !s.ok()) return s;
  if (Status s = wan.Start(); !s.ok()) return s;

  netem::ControlServer control_server(&wan);
  if (Status s = control_server.Start(
          o.control_port != 0 ? o.control_port : static_cast<uint16_t>(o.base_port + 100));
      !s.ok()) {
    return s;
  }

  std::error_code ec;
  std::filesystem::create_directories(o.data_dir, ec);
  if (ec) return Status::Unavailable("cannot create " + o.data_dir + ": " + ec.message());
  const std::string secret = RandomSecret();
  std::vector<ChildProcess> children;
  std::map<std::string, std::pair<uint16_t, uint16_t>> ports;  // region -> client, peer
  Status failure;
  for (size_t i = 0; i < o.regions.size() && failure.ok(); ++i) {
    const std::string& r = o.regions[i];
    std::string peers;
    for (const auto& q : o.regions) {
      if (q == r) continue;
      if (!peers.empty()) peers += ",";
      peers += fmt::format("{}=127.0.0.1:{}", q, wan.LinkPort(r, q));
    }
    std::vector<std::string> argv = {o.edgestate_binary,
                                     "serve",
                                     "--region",
                                     r,
                                     "--listen",
                                     o.listen,
                                     "--port",
                                     std::to_string(o.base_port + i),
                                     "--data-dir",
                                     (std::filesystem::path(o.data_dir) / r).string(),
                                     "--peer-listen",
                                     "127.0.0.1:0",
                                     "--peers",
                                     peers,
                                     "--cluster-secret",
                                     secret,
                                     "--replication-interval",
                                     std::to_string(o.replication_interval_ms),
                                     "--threads",
                                     "1"};
    if (std::vector<std::string> voters = DemoVoters(o); !voters.empty()) {
      argv.push_back("--strong-voters");
      argv.push_back(fmt::format("{}", fmt::join(voters, ",")));
    }
    argv.insert(argv.end(), o.node_args.begin(), o.node_args.end());
    std::vector<std::pair<std::string, std::string>> env;
    if (auto it = o.clock_offsets_ms.find(r); it != o.clock_offsets_ms.end()) {
      env.emplace_back("EDGESTATE_CLOCK_OFFSET_MS", std::to_string(it->second));
    }
    auto child = SpawnProcess("region " + r, argv,
                              (std::filesystem::path(o.data_dir) / (r + ".log")).string(), env);
    if (!child.ok()) {
      failure = child.status();
      break;
    }
    children.push_back(std::move(child).value());
  }
  static const std::regex kReady(R"(listening on http://[^ ]+:(\d+) .*peer_port=(\d+))");
  for (size_t i = 0; i < children.size() && failure.ok(); ++i) {
    auto m = AwaitOutput(&children[i], kReady, std::chrono::seconds(15));
    if (!m.ok()) {
      failure = m.status();
      break;
    }
    const std::string& region = o.regions[i];
    uint16_t client = static_cast<uint16_t>(std::stoi((*m)[1]));
    uint16_t peer = static_cast<uint16_t>(std::stoi((*m)[2]));
    ports[region] = {client, peer};
    for (const auto& q : o.regions) {
      if (q != region) wan.SetTarget(q, region, "127.0.0.1", peer).IgnoreError();
    }
  }
  if (!failure.ok()) {
    StopProcesses(children);
    control_server.Shutdown();
    wan.Stop();
    return failure;
  }

  for (size_t i = 0; i < children.size(); ++i) {
    std::printf("%-4s http://%s:%u  (pid %d)\n", o.regions[i].c_str(), o.listen.c_str(),
                ports[o.regions[i]].first, static_cast<int>(children[i].pid));
  }
  std::printf(
      "wan  http://127.0.0.1:%u/links  (cut/heal: POST /links/FROM/TO/cut|heal; "
      "POST /regions/R/isolate|rejoin)\n",
      control_server.port());
  std::printf(
      "demo ready: %zu regions, replication every %lld ms over the emulated WAN; "
      "Ctrl-C stops everything\n",
      children.size(), static_cast<long long>(o.replication_interval_ms));
  std::fflush(stdout);

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGCHLD) {
      for (auto& c : children) {
        int status;
        if (!c.exited && waitpid(c.pid, &status, WNOHANG) == c.pid) {
          c.exited = true;
          std::fprintf(stderr, "demo: %s (pid %d) exited with status %d; see its log\n",
                       c.name.c_str(), static_cast<int>(c.pid),
                       WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
      }
      continue;
    }
    break;
  }
  std::fprintf(stderr, "demo: stopping %zu regions\n", children.size());
  StopProcesses(children);
  control_server.Shutdown();
  wan.Stop();
  return Status::Ok();
}

Status RunWan(const WanOptions& o) {
  auto model = netem::RttModel::LoadOrDefault(o.rtt_file);
  if (!model.ok()) return Status::InvalidArgument(model.status().message());
  std::vector<std::string> regions = o.regions.empty() ? model->regions() : o.regions;
  for (const auto& r : regions) {
    if (!model->Has(r)) return Status::InvalidArgument("region " + r + " is not in the RTT model");
  }
  if (o.jitter_ms < 0 || o.jitter_ms > 1000)
    return Status::InvalidArgument("jitter must be 0..1000 ms");
  std::map<std::string, replication::HostPort> targets;
  for (const auto& [region, hp] : o.targets) {
    auto parsed = replication::ParseHostPort(hp);
    if (!parsed.ok())
      return Status::InvalidArgument("target " + region + ": " + parsed.status().message());
    if (std::find(regions.begin(), regions.end(), region) == regions.end()) {
      return Status::InvalidArgument("target region " + region + " is not emulated");
    }
    targets[region] = *parsed;
  }
  sigset_t signals = BlockTerminationSignals();

  netem::WanEmulator wan;
  if (Status s = netem::AddMesh(&wan, *model, regions, o.jitter_ms); !s.ok()) return s;
  for (const auto& [region, hp] : targets) {
    for (const auto& from : regions) {
      if (from != region) wan.SetTarget(from, region, hp.host, hp.port).IgnoreError();
    }
  }
  if (Status s = wan.Start(); !s.ok()) return s;
  netem::ControlServer control_server(&wan);
  if (Status s = control_server.Start(o.control_port); !s.ok()) return s;
  for (const auto& l : wan.Stats()) {
    std::printf("link %s %s 127.0.0.1:%u one_way_ms=%g\n", l.from.c_str(), l.to.c_str(), l.port,
                l.one_way_ms);
  }
  std::printf("wan  http://127.0.0.1:%u/links ready\n", control_server.port());
  std::fflush(stdout);
  int sig = 0;
  while (sigwait(&signals, &sig) != 0) {
  }
  control_server.Shutdown();
  wan.Stop();
  return Status::Ok();
}

}  // namespace edgestate::demo
