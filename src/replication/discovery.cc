#include "replication/discovery.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <fmt/format.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <map>
#include <nlohmann/json.hpp>

#include "common/region.h"
#include "common/thread_name.h"

namespace edgestate::replication {
namespace {

bool IsDnsName(std::string_view s) {
  if (s.empty() || s.size() > 253 || s.front() == '.' || s.find("..") != std::string_view::npos) {
    return false;
  }
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// One c-ares channel, used by one thread for one resolution.
class Resolver {
 public:
  // Every query ends by `timeout` after Create, or as soon as *cancel is set (may be null).
  static StatusOr<std::unique_ptr<Resolver>> Create(const std::string& server,
                                                    std::chrono::milliseconds timeout,
                                                    const std::atomic<bool>* cancel) {
    static std::once_flag once;
    static int init_status = ARES_SUCCESS;
    std::call_once(once, [] { init_status = ares_library_init(ARES_LIB_INIT_ALL); });
    if (init_status != ARES_SUCCESS) {
      return Status::Internal(std::string("c-ares: ") + ares_strerror(init_status));
    }
    auto r = std::unique_ptr<Resolver>(new Resolver());
    r->deadline_ = std::chrono::steady_clock::now() + timeout;
    r->cancel_ = cancel;
    ares_options o{};
    o.timeout = static_cast<int>(std::max<int64_t>(100, timeout.count() / 2));
    o.tries = 2;
    int st = ares_init_options(&r->channel_, &o, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (st != ARES_SUCCESS) {
      r->channel_ = nullptr;
      return Status::Unavailable(std::string("DNS resolver: ") + ares_strerror(st));
    }
    if (!server.empty()) {
      auto hp = ParseHostPort(server);
      if (!hp.ok()) return hp.status();
      std::string csv = hp->host.find(':') != std::string::npos
                            ? fmt::format("[{}]:{}", hp->host, hp->port)
                            : fmt::format("{}:{}", hp->host, hp->port);
      st = ares_set_servers_ports_csv(r->channel_, csv.c_str());
      if (st != ARES_SUCCESS) {
        return Status::InvalidArgument(fmt::format("DNS server {}: {}", server, ares_strerror(st)));
      }
    }
    return r;
  }

  ~Resolver() {
    if (channel_ != nullptr) ares_destroy(channel_);
  }

  struct Answer {
    int status = ARES_SUCCESS;
    std::string bytes;
  };

  // Sends one query and waits for its answer (c-ares's own timeouts and retries bound it).
  // The name goes through the resolver's search list (/etc/resolv.conf's search and ndots), so
  // a Kubernetes pod may give its headless service's name without the namespace.
  Answer Query(const std::string& name, int type) {
    Answer answer;
    bool done = false;
    struct Ctx {
      Answer* answer;
      bool* done;
    } ctx{&answer, &done};
    ares_search(
        channel_, name.c_str(), ns_c_in, type,
        [](void* arg, int status, int, unsigned char* abuf, int alen) {
          auto* c = static_cast<Ctx*>(arg);
          c->answer->status = status;
          if (status == ARES_SUCCESS && abuf != nullptr && alen > 0) {
            c->answer->bytes.assign(reinterpret_cast<const char*>(abuf), static_cast<size_t>(alen));
          }
          *c->done = true;
        },
        &ctx);
    while (!done) {
      ares_socket_t socks[ARES_GETSOCK_MAXNUM];
      int bits = ares_getsock(channel_, socks, ARES_GETSOCK_MAXNUM);
      std::vector<pollfd> fds;
      for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
        short events = 0;
        if (ARES_GETSOCK_READABLE(bits, i)) events |= POLLIN;
        if (ARES_GETSOCK_WRITABLE(bits, i)) events |= POLLOUT;
        if (events != 0) fds.push_back({socks[i], events, 0});
      }
      timeval tv{};
      timeval* tvp = ares_timeout(channel_, nullptr, &tv);
      int wait_ms = tvp ? static_cast<int>(tv.tv_sec * 1000 + tv.tv_usec / 1000) : 100;
      if ((cancel_ != nullptr && cancel_->load()) ||
          std::chrono::steady_clock::now() >= deadline_) {
        ares_cancel(channel_);  // Calls back with ARES_ECANCELLED.
        continue;
      }
      // Short slices: a stop or the deadline is seen within 50 ms.
      int n = poll(fds.data(), fds.size(), std::clamp(wait_ms, 1, 50));
      if (n <= 0) {
        ares_process_fd(channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // Timeouts.
        continue;
      }
      for (const pollfd& p : fds) {
        if (p.revents == 0) continue;
        ares_process_fd(channel_,
                        (p.revents & (POLLIN | POLLERR | POLLHUP)) ? p.fd : ARES_SOCKET_BAD,
                        (p.revents & POLLOUT) ? p.fd : ARES_SOCKET_BAD);
      }
    }
    return answer;
  }

 private:
  Resolver() = default;
  ares_channel channel_ = nullptr;
  std::chrono::steady_clock::time_point deadline_;
  const std::atomic<bool>* cancel_ = nullptr;
};

// NXDOMAIN and "no records of that type" are answers (an empty set); anything else is a failure.
bool IsEmptyAnswer(int status) { return status == ARES_ENOTFOUND || status == ARES_ENODATA; }

Status QueryFailed(const std::string& name, const char* type, int status) {
  return Status::Unavailable(fmt::format(
      "DNS {} {}: {}", type, name,
      status == ARES_ECANCELLED ? "no answer within the resolution's time limit, or stopped"
                                : ares_strerror(status)));
}

StatusOr<std::string> Txt(Resolver& r, const std::string& name) {
  Resolver::Answer a = r.Query(name, ns_t_txt);
  if (IsEmptyAnswer(a.status)) return std::string();
  if (a.status != ARES_SUCCESS) return QueryFailed(name, "TXT", a.status);
  ares_txt_ext* txt = nullptr;
  int st = ares_parse_txt_reply_ext(reinterpret_cast<const unsigned char*>(a.bytes.data()),
                                    static_cast<int>(a.bytes.size()), &txt);
  if (st != ARES_SUCCESS) return QueryFailed(name, "TXT", st);
  std::string out;
  for (ares_txt_ext* t = txt; t != nullptr; t = t->next) {
    if (t->record_start && !out.empty()) out.push_back(',');  // Records: one list.
    out.append(reinterpret_cast<const char*>(t->txt), t->length);
  }
  ares_free_data(txt);
  return out;
}

// The first AAAA address of `name`, else (with `also_a`) its first A address; empty if none.
// The first AAAA address of `name`, else (with `also_a`) its first A address; empty if none. With
// `also_a`, a failed AAAA query (some servers refuse AAAA for IPv4-only names) is an error only
// when the A query does not give an address either.
StatusOr<std::string> Address(Resolver& r, const std::string& name, bool also_a) {
  Status aaaa_failure = Status::Ok();
  Resolver::Answer a = r.Query(name, ns_t_aaaa);
  if (a.status == ARES_SUCCESS) {
    ares_addr6ttl addrs[8];
    int n = 8;
    int st = ares_parse_aaaa_reply(reinterpret_cast<const unsigned char*>(a.bytes.data()),
                                   static_cast<int>(a.bytes.size()), nullptr, addrs, &n);
    char text[INET6_ADDRSTRLEN];
    if (st == ARES_SUCCESS && n > 0 &&
        inet_ntop(AF_INET6, &addrs[0].ip6addr, text, sizeof(text)) != nullptr) {
      return std::string(text);
    }
    if (st != ARES_SUCCESS && !IsEmptyAnswer(st)) aaaa_failure = QueryFailed(name, "AAAA", st);
  } else if (!IsEmptyAnswer(a.status)) {
    aaaa_failure = QueryFailed(name, "AAAA", a.status);
  }
  if (!also_a) {
    if (!aaaa_failure.ok()) return aaaa_failure;
    return std::string();
  }
  a = r.Query(name, ns_t_a);
  if (a.status == ARES_SUCCESS) {
    ares_addrttl addrs[8];
    int n = 8;
    int st = ares_parse_a_reply(reinterpret_cast<const unsigned char*>(a.bytes.data()),
                                static_cast<int>(a.bytes.size()), nullptr, addrs, &n);
    char text[INET_ADDRSTRLEN];
    if (st == ARES_SUCCESS && n > 0 &&
        inet_ntop(AF_INET, &addrs[0].ipaddr, text, sizeof(text)) != nullptr) {
      return std::string(text);
    }
    if (st != ARES_SUCCESS && !IsEmptyAnswer(st)) return QueryFailed(name, "A", st);
  } else if (!IsEmptyAnswer(a.status)) {
    return QueryFailed(name, "A", a.status);
  }
  if (!aaaa_failure.ok()) return aaaa_failure;
  return std::string();
}

StatusOr<std::vector<PeerAddress>> ResolveFly(Resolver& r, const DiscoveryOptions& o) {
  const std::string app = o.spec.name;
  auto txt = Txt(r, "vms." + app + ".internal");
  if (!txt.ok()) return txt.status();
  std::map<std::string, std::string> by_region;  // Region -> smallest machine id.
  for (FlyMachine& m : ParseFlyVms(*txt)) {
    if (m.id == o.machine_id || m.region == o.region) continue;
    auto [it, inserted] = by_region.emplace(m.region, m.id);
    if (!inserted && m.id < it->second) it->second = m.id;
  }
  std::vector<PeerAddress> out;
  for (const auto& [region, id] : by_region) {
    auto addr = Address(r, id + ".vm." + app + ".internal", /*also_a=*/false);
    if (!addr.ok()) return addr.status();
    if (addr->empty()) continue;  // Listed but not addressable yet: next time.
    out.push_back({region, {*addr, o.port}});
  }
  return out;
}

StatusOr<std::vector<PeerAddress>> ResolveSrv(Resolver& r, const DiscoveryOptions& o) {
  Resolver::Answer a = r.Query(o.spec.name, ns_t_srv);
  if (IsEmptyAnswer(a.status)) return std::vector<PeerAddress>{};
  if (a.status != ARES_SUCCESS) return QueryFailed(o.spec.name, "SRV", a.status);
  ares_srv_reply* srv = nullptr;
  int st = ares_parse_srv_reply(reinterpret_cast<const unsigned char*>(a.bytes.data()),
                                static_cast<int>(a.bytes.size()), &srv);
  if (st != ARES_SUCCESS) return QueryFailed(o.spec.name, "SRV", st);
  struct Target {
    uint64_t ordinal;
    std::string host;
    uint16_t port;
  };
  std::map<std::string, Target> by_region;
  for (ares_srv_reply* s = srv; s != nullptr; s = s->next) {
    std::string host = s->host != nullptr ? s->host : "";
    std::optional<SrvPod> pod = ParseSrvTarget(host);
    if (!pod || pod->region == o.region) continue;
    Target t{pod->ordinal, host, o.port != 0 ? o.port : s->port};
    auto [it, inserted] = by_region.emplace(pod->region, t);
    if (!inserted && t.ordinal < it->second.ordinal) it->second = t;
  }
  ares_free_data(srv);
  std::vector<PeerAddress> out;
  for (const auto& [region, t] : by_region) {
    if (t.port == 0) continue;
    auto addr = Address(r, t.host, /*also_a=*/true);
    if (!addr.ok()) return addr.status();
    if (addr->empty()) continue;
    out.push_back({region, {*addr, t.port}});
  }
  return out;
}

}  // namespace

StatusOr<DiscoverySpec> ParseDiscoverySpec(std::string_view s) {
  DiscoverySpec spec;
  std::string_view rest;
  if (s.starts_with("fly:")) {
    spec.kind = DiscoverySpec::Kind::kFly;
    rest = s.substr(4);
  } else if (s.starts_with("srv:")) {
    spec.kind = DiscoverySpec::Kind::kSrv;
    rest = s.substr(4);
  } else {
    return Status::InvalidArgument(
        fmt::format("peer discovery \"{}\" is neither fly:APP nor srv:NAME", s));
  }
  if (!IsDnsName(rest)) {
    return Status::InvalidArgument(fmt::format(
        "peer discovery \"{}\": \"{}\" is not a DNS name (letters, digits, '-', '_', '.')", s,
        rest));
  }
  spec.name = std::string(rest);
  return spec;
}

std::vector<FlyMachine> ParseFlyVms(std::string_view txt) {
  std::vector<FlyMachine> out;
  while (!txt.empty()) {
    size_t comma = txt.find(',');
    std::string_view item = Trim(txt.substr(0, comma));
    txt = comma == std::string_view::npos ? std::string_view() : txt.substr(comma + 1);
    size_t space = item.find(' ');
    if (space == std::string_view::npos) continue;
    std::string_view id = item.substr(0, space);
    std::string_view region = Trim(item.substr(space + 1));
    bool id_ok = !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c));
    });
    if (!id_ok || !IsRegionName(region)) continue;
    out.push_back({std::string(id), std::string(region)});
  }
  return out;
}

std::optional<SrvPod> ParseSrvTarget(std::string_view target) {
  std::string_view label = target.substr(0, target.find('.'));
  size_t last = label.rfind('-');
  if (last == std::string_view::npos || last + 1 >= label.size()) return std::nullopt;
  std::string_view ordinal = label.substr(last + 1);
  SrvPod pod;
  auto [ptr, ec] = std::from_chars(ordinal.data(), ordinal.data() + ordinal.size(), pod.ordinal);
  if (ec != std::errc() || ptr != ordinal.data() + ordinal.size()) return std::nullopt;
  std::string_view app_region = label.substr(0, last);
  size_t first = app_region.find('-');
  if (first == std::string_view::npos || first == 0) return std::nullopt;
  std::string_view region = app_region.substr(first + 1);
  if (!IsRegionName(region)) return std::nullopt;
  pod.region = std::string(region);
  return pod;
}

StatusOr<std::vector<PeerAddress>> ResolvePeers(const DiscoveryOptions& options,
                                                const std::atomic<bool>* cancel) {
  auto r = Resolver::Create(options.server, options.timeout, cancel);
  if (!r.ok()) return r.status();
  auto peers = options.spec.kind == DiscoverySpec::Kind::kFly ? ResolveFly(**r, options)
                                                              : ResolveSrv(**r, options);
  if (!peers.ok()) return peers;
  std::sort(peers->begin(), peers->end(),
            [](const PeerAddress& a, const PeerAddress& b) { return a.region < b.region; });
  if (peers->size() >= 64) {
    return Status::Unavailable(
        fmt::format("DNS names {} regions; a cluster has at most 64", peers->size() + 1));
  }
  return peers;
}

std::vector<PeerAddress> NextPeerSet(const std::vector<PeerAddress>& in_use,
                                     std::vector<PeerAddress> answer,
                                     std::map<std::string, int>* misses) {
  auto listed = [&](const std::string& region) {
    return std::any_of(answer.begin(), answer.end(),
                       [&](const PeerAddress& a) { return a.region == region; });
  };
  for (auto it = misses->begin(); it != misses->end();) {
    it = listed(it->first) ? misses->erase(it) : std::next(it);
  }
  std::vector<PeerAddress> held;
  for (const PeerAddress& p : in_use) {
    if (listed(p.region)) continue;
    int& m = (*misses)[p.region];
    if (++m < kMissesToRemove) {
      held.push_back(p);
    } else {
      misses->erase(p.region);
    }
  }
  answer.insert(answer.end(), held.begin(), held.end());
  std::sort(answer.begin(), answer.end(),
            [](const PeerAddress& a, const PeerAddress& b) { return a.region < b.region; });
  return answer;
}

PeerDiscovery::PeerDiscovery(DiscoveryOptions options, Listener on_peers, MetricsRegistry* metrics)
    : options_(std::move(options)), on_peers_(std::move(on_peers)) {
  resolutions_ = &metrics->AddCounter("edgestate_peer_discovery_resolutions_total",
                                      "Resolutions of the peer set from DNS (--peers-dns).");
  failures_ = &metrics->AddCounter("edgestate_peer_discovery_failures_total",
                                   "Resolutions that failed (the peers found before were kept).");
  metrics->AddGauge("edgestate_peer_discovery_peers",
                    "Peers found by the last successful resolution (-1: none yet).",
                    [this] { return static_cast<double>(peers_found_.load()); });
}

void PeerDiscovery::Start() {
  thread_ = std::thread([this] {
    NameThisThread("es-discovery");
    Loop();
  });
}

PeerDiscovery::~PeerDiscovery() {
  stopping_.store(true);  // A resolution in progress ends within 50 ms.
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

namespace {
int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

std::string PeerDiscovery::StatusJson() const {
  nlohmann::json j;
  j["source"] =
      (options_.spec.kind == DiscoverySpec::Kind::kFly ? "fly:" : "srv:") + options_.spec.name;
  const int64_t found = peers_found_.load();
  j["peers"] = found < 0 ? nlohmann::json(nullptr) : nlohmann::json(found);
  j["resolutions"] = resolutions_->value();
  j["failures"] = failures_->value();
  std::lock_guard lock(mu_);
  j["last_error"] = last_error_.empty() ? nlohmann::json(nullptr) : nlohmann::json(last_error_);
  j["last_success_ms_ago"] =
      last_success_ms_ ? nlohmann::json(SteadyMs() - *last_success_ms_) : nlohmann::json(nullptr);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void PeerDiscovery::Loop() {
  std::optional<std::vector<PeerAddress>> last;
  std::map<std::string, int> misses;
  std::string last_error;
  for (;;) {
    resolutions_->Inc();
    auto peers = ResolvePeers(options_, &stopping_);
    if (peers.ok()) {
      last_error.clear();
      {
        std::lock_guard lock(mu_);
        last_error_.clear();
        last_success_ms_ = SteadyMs();
      }
      peers_found_.store(static_cast<int64_t>(peers->size()));
      if (last) peers = NextPeerSet(*last, std::move(peers).value(), &misses);
      auto same = [](const std::vector<PeerAddress>& a, const std::vector<PeerAddress>& b) {
        return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const auto& x, const auto& y) {
          return x.region == y.region && x.address.host == y.address.host &&
                 x.address.port == y.address.port;
        });
      };
      if (!last || !same(*last, *peers)) {
        std::vector<std::string> names;
        for (const PeerAddress& p : *peers) {
          names.push_back(p.region + "=" + FormatHostPort(p.address));
        }
        spdlog::info("peers from DNS: {}",
                     names.empty() ? "none" : fmt::format("{}", fmt::join(names, ",")));
        last = *peers;
        on_peers_(std::move(peers).value());
      }
    } else {
      failures_->Inc();
      {
        std::lock_guard lock(mu_);
        last_error_ = peers.status().message();
      }
      if (peers.status().message() != last_error) {  // Logged once per distinct failure.
        last_error = peers.status().message();
        spdlog::warn("peer discovery: {} (keeping the peers found before)", last_error);
      }
    }
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, options_.interval, [this] { return stop_; })) return;
  }
}

}  // namespace edgestate::replication
