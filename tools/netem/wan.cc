#include "netem/wan.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.

#include "net/net.h"
#include "netem/rtt_model.h"

namespace edgestate::netem {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::redirect_error;
using asio::use_awaitable;
using boost::system::error_code;
using SteadyClock = std::chrono::steady_clock;

namespace {

constexpr size_t kChunkBytes = 64 * 1024;
constexpr size_t kMaxQueuedBytes = 16u << 20;  // Per direction; the reader pauses beyond it.

// One direction of a relayed connection: chunks waiting for their release time.
struct Pipe {
  explicit Pipe(asio::io_context& ioc) : wake(ioc), space(ioc) {}
  std::deque<std::pair<SteadyClock::time_point, std::string>> queue;
  size_t queued_bytes = 0;
  SteadyClock::time_point last_release{};
  bool eof = false;
  asio::steady_timer wake;   // The writer waits on it; the reader cancels it.
  asio::steady_timer space;  // The reader waits on it when the queue is full.
};

struct Relay {
  explicit Relay(asio::io_context& ioc) : client(ioc), server(ioc), up(ioc), down(ioc) {}
  void Close() {
    if (closed) return;
    closed = true;
    error_code ec;
    client.close(ec);
    server.close(ec);
    for (Pipe* p : {&up, &down}) {
      p->wake.cancel();
      p->space.cancel();
    }
  }
  tcp::socket client;  // The connecting region's side.
  tcp::socket server;  // The target region's side.
  Pipe up;             // client -> server
  Pipe down;           // server -> client
  bool closed = false;
  int directions_done = 0;
};

}  // namespace

struct Link {
  Link(asio::io_context& ioc, LinkSpec s) : spec(std::move(s)), acceptor(ioc), healed(ioc) {
    healed.expires_at(SteadyClock::time_point::max());
  }
  LinkSpec spec;
  tcp::acceptor acceptor;
  uint16_t port = 0;
  mutable std::mutex mu;  // Guards spec.target_host / spec.target_port.
  std::atomic<bool> cut{false};
  std::atomic<uint64_t> bytes_forward{0}, bytes_backward{0}, connections{0}, open{0};
  std::set<std::shared_ptr<Relay>> relays;  // I/O thread only.
  asio::steady_timer healed;  // Waited on while cut; Heal cancels it. I/O thread only.
  mutable std::mutex late_mu;
  std::vector<float> late_ms;  // GUARDED_BY(late_mu): ring of the last kLateSamples.
  uint64_t late_count = 0;     // GUARDED_BY(late_mu)
  void RecordLateness(double ms) {
    std::lock_guard lock(late_mu);
    if (late_ms.size() < kLateSamples) {
      late_ms.push_back(static_cast<float>(ms));
    } else {
      late_ms[late_count % kLateSamples] = static_cast<float>(ms);
    }
    ++late_count;
  }
  static constexpr size_t kLateSamples = 4096;
};

namespace {

// Suspends while `link` is cut (a partition holds traffic; it does not reset connections).
awaitable<void> WhileCut(Link* link) {
  while (link->cut.load()) {
    error_code ec;
    link->healed.expires_at(SteadyClock::time_point::max());
    co_await link->healed.async_wait(redirect_error(use_awaitable, ec));
  }
}

}  // namespace

struct WanEmulator::Impl : std::enable_shared_from_this<WanEmulator::Impl> {
  explicit Impl(std::string host) : listen_host(std::move(host)) {}

  awaitable<void> Accept(Link* link);
  awaitable<void> Connect(std::shared_ptr<Relay> relay, Link* link, std::string host,
                          uint16_t port);
  awaitable<void> ReadSide(std::shared_ptr<Relay> r, tcp::socket* src, Pipe* pipe, Link* link,
                           bool forward);
  awaitable<void> WriteSide(std::shared_ptr<Relay> r, tcp::socket* dst, Pipe* pipe, Link* link);
  Link* Find(const std::string& from, const std::string& to) const;
  void CloseAll(Link* link);

  const std::string listen_host;
  asio::io_context ioc{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
  std::thread thread;
  mutable std::mutex mu;  // Guards `links` (the map, not the links).
  std::map<std::pair<std::string, std::string>, std::unique_ptr<Link>> links;
  std::mt19937_64 rng{12345};                       // I/O thread only.
  std::set<std::shared_ptr<Relay>> conns_waiting_;  // Held by a cut link. I/O thread only.
  bool started = false;
};

Link* WanEmulator::Impl::Find(const std::string& from, const std::string& to) const {
  std::lock_guard lock(mu);
  auto it = links.find({from, to});
  return it == links.end() ? nullptr : it->second.get();
}

void WanEmulator::Impl::CloseAll(Link* link) {
  auto relays = link->relays;
  for (auto& r : relays) r->Close();
}

awaitable<void> WanEmulator::Impl::Accept(Link* link) {
  auto self = shared_from_this();
  for (;;) {
    auto relay = std::make_shared<Relay>(ioc);
    error_code ec;
    co_await link->acceptor.async_accept(relay->client, redirect_error(use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !link->acceptor.is_open()) co_return;
    if (ec) continue;
    link->connections.fetch_add(1);
    std::string host;
    uint16_t port;
    {
      std::lock_guard lock(link->mu);
      host = link->spec.target_host;
      port = link->spec.target_port;
    }
    if (port == 0) {
      relay->Close();  // The target region has not started yet.
      continue;
    }
    conns_waiting_.insert(relay);
    asio::co_spawn(ioc, Connect(relay, link, host, port), asio::detached);
  }
}

awaitable<void> WanEmulator::Impl::Connect(std::shared_ptr<Relay> relay, Link* link,
                                           std::string host, uint16_t port) {
  auto self = shared_from_this();
  co_await WhileCut(link);  // Like a SYN into a partition: the connect waits for the heal.
  conns_waiting_.erase(relay);
  error_code ec;
  {
    auto address = asio::ip::make_address(host, ec);
    if (!ec && !relay->closed) {
      co_await relay->server.async_connect(tcp::endpoint(address, port),
                                           redirect_error(use_awaitable, ec));
    }
    if (ec || relay->closed) {
      relay->Close();
      co_return;
    }
    relay->client.set_option(tcp::no_delay(true), ec);
    relay->server.set_option(tcp::no_delay(true), ec);
    link->relays.insert(relay);
    link->open.fetch_add(1);
    asio::co_spawn(ioc, ReadSide(relay, &relay->client, &relay->up, link, true), asio::detached);
    asio::co_spawn(ioc, WriteSide(relay, &relay->server, &relay->up, link), asio::detached);
    asio::co_spawn(ioc, ReadSide(relay, &relay->server, &relay->down, link, false), asio::detached);
    asio::co_spawn(ioc, WriteSide(relay, &relay->client, &relay->down, link), asio::detached);
  }
}

awaitable<void> WanEmulator::Impl::ReadSide(std::shared_ptr<Relay> r, tcp::socket* src, Pipe* pipe,
                                            Link* link, bool forward) {
  std::string buf(kChunkBytes, '\0');
  const auto delay = std::chrono::duration<double, std::milli>(link->spec.one_way_ms);
  std::uniform_real_distribution<double> jitter(0.0, std::max(0.0, link->spec.jitter_ms));
  while (!r->closed) {
    error_code ec;
    size_t n = co_await src->async_read_some(asio::buffer(buf), redirect_error(use_awaitable, ec));
    if (ec) {
      pipe->eof = true;
      pipe->wake.cancel();
      co_return;
    }
    (forward ? link->bytes_forward : link->bytes_backward).fetch_add(n);
    auto release =
        SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(
                                 delay + std::chrono::duration<double, std::milli>(jitter(rng)));
    release = std::max(release, pipe->last_release);  // Jitter never reorders.
    pipe->last_release = release;
    pipe->queue.emplace_back(release, buf.substr(0, n));
    pipe->queued_bytes += n;
    pipe->wake.cancel();
    while (pipe->queued_bytes > kMaxQueuedBytes && !r->closed) {
      pipe->space.expires_after(std::chrono::seconds(1));
      co_await pipe->space.async_wait(redirect_error(use_awaitable, ec));
    }
  }
}

awaitable<void> WanEmulator::Impl::WriteSide(std::shared_ptr<Relay> r, tcp::socket* dst, Pipe* pipe,
                                             Link* link) {
  while (!r->closed) {
    error_code ec;
    if (pipe->queue.empty()) {
      if (pipe->eof) {
        dst->shutdown(tcp::socket::shutdown_send, ec);
        break;
      }
      pipe->wake.expires_at(SteadyClock::time_point::max());
      co_await pipe->wake.async_wait(redirect_error(use_awaitable, ec));
      continue;
    }
    if (link->cut.load()) {
      co_await WhileCut(link);
      continue;
    }
    auto& [release, data] = pipe->queue.front();
    if (SteadyClock::now() < release) {
      pipe->wake.expires_at(release);
      co_await pipe->wake.async_wait(redirect_error(use_awaitable, ec));
      continue;
    }
    if (!link->cut.load()) {
      link->RecordLateness(
          std::chrono::duration<double, std::milli>(SteadyClock::now() - release).count());
    }
    co_await asio::async_write(*dst, asio::buffer(data), redirect_error(use_awaitable, ec));
    if (ec) {
      r->Close();
      break;
    }
    pipe->queued_bytes -= data.size();
    pipe->queue.pop_front();
    pipe->space.cancel();
  }
  if (++r->directions_done == 2 || r->closed) {
    r->Close();
    if (link->relays.erase(r) > 0) link->open.fetch_sub(1);
  }
}

WanEmulator::WanEmulator(std::string listen_host)
    : impl_(std::make_shared<Impl>(std::move(listen_host))) {}

WanEmulator::~WanEmulator() { Stop(); }

Status WanEmulator::AddLink(const LinkSpec& spec) {
  Impl& s = *impl_;
  auto link = std::make_unique<Link>(s.ioc, spec);
  auto port = net::Listen(link->acceptor, s.listen_host, spec.listen_port,
                          fmt::format("link {}->{}", spec.from, spec.to));
  if (!port.ok()) return port.status();
  link->port = *port;
  Link* raw = link.get();
  {
    std::lock_guard lock(s.mu);
    if (!s.links.emplace(std::make_pair(spec.from, spec.to), std::move(link)).second) {
      return Status::InvalidArgument(fmt::format("link {}->{} exists", spec.from, spec.to));
    }
  }
  if (s.started) asio::co_spawn(s.ioc, s.Accept(raw), asio::detached);
  return Status::Ok();
}

Status WanEmulator::SetTarget(const std::string& from, const std::string& to,
                              const std::string& host, uint16_t port) {
  Link* l = impl_->Find(from, to);
  if (!l) return Status::NotFound(fmt::format("no link {}->{}", from, to));
  std::lock_guard lock(l->mu);
  l->spec.target_host = host;
  l->spec.target_port = port;
  return Status::Ok();
}

uint16_t WanEmulator::LinkPort(const std::string& from, const std::string& to) const {
  Link* l = impl_->Find(from, to);
  return l ? l->port : 0;
}

Status WanEmulator::Start() {
  Impl& s = *impl_;
  if (s.started) return Status::Ok();
  s.started = true;
  {
    std::lock_guard lock(s.mu);
    for (auto& [key, link] : s.links) asio::co_spawn(s.ioc, s.Accept(link.get()), asio::detached);
  }
  s.guard.emplace(s.ioc.get_executor());
  s.thread = std::thread([impl = impl_.get()] { net::RunLoop(impl->ioc, "WAN emulator"); });
  return Status::Ok();
}

void WanEmulator::Stop() {
  Impl& s = *impl_;
  if (!s.thread.joinable()) return;
  asio::post(s.ioc, [&s] {
    std::lock_guard lock(s.mu);
    for (auto& [key, link] : s.links) {
      error_code ec;
      link->acceptor.close(ec);
      s.CloseAll(link.get());
      link->cut.store(false);
      link->healed.cancel();
    }
    for (auto& r : s.conns_waiting_) r->Close();
  });
  s.guard.reset();
  net::StopLoop(s.ioc, s.thread, std::chrono::seconds(10));
}

Status WanEmulator::Cut(const std::string& from, const std::string& to) {
  Link* l = impl_->Find(from, to);
  if (!l) return Status::NotFound(fmt::format("no link {}->{}", from, to));
  l->cut.store(true);  // Writers and new connections check it before moving any byte.
  return Status::Ok();
}

Status WanEmulator::Heal(const std::string& from, const std::string& to) {
  Link* l = impl_->Find(from, to);
  if (!l) return Status::NotFound(fmt::format("no link {}->{}", from, to));
  l->cut.store(false);
  if (impl_->thread.joinable()) {
    asio::post(impl_->ioc, [impl = impl_, l] { l->healed.cancel(); });
  }
  return Status::Ok();
}

Status WanEmulator::ForEachLinkOf(const std::string& region,
                                  Status (WanEmulator::*op)(const std::string&,
                                                            const std::string&)) {
  std::vector<std::pair<std::string, std::string>> keys;
  {
    std::lock_guard lock(impl_->mu);
    for (auto& [key, link] : impl_->links) {
      if (key.first == region || key.second == region) keys.push_back(key);
    }
  }
  if (keys.empty()) return Status::NotFound("no links touch region " + region);
  for (auto& [a, b] : keys) {
    if (Status s = (this->*op)(a, b); !s.ok()) return s;
  }
  return Status::Ok();
}

Status WanEmulator::Isolate(const std::string& region) {
  return ForEachLinkOf(region, &WanEmulator::Cut);
}

Status WanEmulator::Rejoin(const std::string& region) {
  return ForEachLinkOf(region, &WanEmulator::Heal);
}

std::vector<LinkStats> WanEmulator::Stats() const {
  std::vector<LinkStats> out;
  std::lock_guard lock(impl_->mu);
  for (auto& [key, l] : impl_->links) {
    LinkStats s;
    s.from = key.first;
    s.to = key.second;
    s.port = l->port;
    s.cut = l->cut.load();
    s.one_way_ms = l->spec.one_way_ms;
    s.bytes_forward = l->bytes_forward.load();
    s.bytes_backward = l->bytes_backward.load();
    s.connections = l->connections.load();
    s.open_connections = l->open.load();
    {
      std::lock_guard late_lock(l->late_mu);
      std::vector<float> v = l->late_ms;
      s.late_samples = l->late_count;
      if (!v.empty()) {
        std::sort(v.begin(), v.end());
        s.late_p50_ms = v[v.size() / 2];
        s.late_p99_ms = v[std::min(v.size() - 1, v.size() * 99 / 100)];
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

Status AddMesh(WanEmulator* wan, const RttModel& model, const std::vector<std::string>& regions,
               double jitter_ms) {
  for (const auto& a : regions) {
    for (const auto& b : regions) {
      if (a == b) continue;
      LinkSpec spec;
      spec.from = a;
      spec.to = b;
      spec.one_way_ms = model.RttMs(a, b) / 2;
      spec.jitter_ms = jitter_ms;
      if (Status s = wan->AddLink(spec); !s.ok()) return s;
    }
  }
  return Status::Ok();
}

}  // namespace edgestate::netem
