#include "replication/replicator.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <shared_mutex>
#include <thread>
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.

#include "common/region.h"
#include "consistency/clock_bound.h"
#include "env/clock.h"
#include "net/net.h"
#include "replication/auth.h"
#include "replication/frames.h"
#include "replication/tls.h"
#include "replication/wire.pb.h"
#include "storage/store.h"

namespace edgestate::replication {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::redirect_error;
using asio::use_awaitable;
using SteadyClock = std::chrono::steady_clock;
using boost::system::error_code;

namespace {

constexpr uint32_t kProtocolVersion = 1;
constexpr size_t kMaxHandshakeFrameBytes = 4096;
// Frames queued behind a write in progress (calls and their replies); beyond this the peer is
// not reading and the link is closed.
constexpr size_t kMaxQueuedBytes = 16u << 20;
constexpr int64_t kNever = std::numeric_limits<int64_t>::min();
constexpr std::chrono::milliseconds kMaxBackoff{5000};
constexpr std::chrono::milliseconds kMinBackoff{100};
// With --replication-interval 0 deltas go out on every commit; heartbeats still go out this
// often so the staleness bound stays tight.
constexpr std::chrono::milliseconds kStreamingHeartbeat{50};
// Heartbeats in flight on a link are bounded: beyond the window the sender waits, so a peer
// that applies slower than we write is never buried under a queue of stale frames (the next
// delta after the wait carries everything that changed meanwhile). The window covers the
// link's propagation delay (its smallest round trip) plus two intervals of slack, so a long
// but healthy link is never throttled.
constexpr size_t kMinUnackedHeartbeats = 2;

enum class LinkState : int { kConnecting, kHandshaking, kConnected, kBackoff, kStopped };

const char* LinkStateName(LinkState s) {
  switch (s) {
    case LinkState::kConnecting:
      return "connecting";
    case LinkState::kHandshaking:
      return "handshaking";
    case LinkState::kConnected:
      return "connected";
    case LinkState::kBackoff:
      return "backoff";
    case LinkState::kStopped:
      return "stopped";
  }
  return "unknown";
}

bool ProofEquals(const std::string& expected, const std::string& got) {
  return expected.size() == got.size() &&
         CRYPTO_memcmp(expected.data(), got.data(), expected.size()) == 0;
}

// A socket, its TLS layer (absent with --peer-insecure-plaintext) and the watchdog deadline
// that bounds every operation on it.
struct Conn {
  explicit Conn(asio::io_context& ioc) : socket(ioc), timer(ioc) {}
  // Ends the connection for good: its socket, its watchdog, and (through `closed`) a connect
  // not started yet.
  void Close() {
    closed = true;
    error_code ec;
    socket.close(ec);
    timer.cancel();
  }
  void ExpireAfter(std::chrono::milliseconds d) {
    deadline = SteadyClock::now() + d;
    budget = d;
    timer.cancel();  // The watchdog re-arms with the new deadline.
  }
  // What ended an operation that failed with `ec`: the deadline when the watchdog closed the
  // connection (the operation itself then only says it was cancelled).
  std::string Failure(const error_code& ec) const {
    return timed_out ? fmt::format("no answer within {} ms", budget.count()) : ec.message();
  }
  tcp::socket socket;
  // Set by Secure before the first frame; reads and writes then go through it. One read and
  // one write may be in flight at once (Asio's SSL stream is full duplex on one thread).
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls;
  // The contexts `tls` was made from, kept while it lives (ReloadTls may replace the current).
  std::shared_ptr<PeerTls> contexts;
  asio::steady_timer timer;
  SteadyClock::time_point deadline = SteadyClock::time_point::max();
  std::chrono::milliseconds budget{0};  // The time ExpireAfter last gave.
  bool closed = false;                  // Close was called: nothing may open the socket again.
  bool timed_out = false;               // The watchdog closed it at its deadline.
  std::string remote;
  // One write at a time: frames written while another is in flight wait here, in order, and
  // the writer in flight sends them (WriteFrame).
  bool writing = false;
  std::deque<std::string> queued;
  size_t queued_bytes = 0;
};

// Runs the TLS handshake on a connected socket as `type`; does nothing without a context
// (plaintext). DeadlineExceeded when the peer stays silent until the connection's deadline;
// Unauthenticated when it does not complete the handshake (no shared key or an untrusted
// certificate, or it does not speak TLS).
awaitable<Status> Secure(Conn& c, asio::ssl::context* ctx,
                         asio::ssl::stream_base::handshake_type type) {
  if (ctx == nullptr) co_return Status::Ok();
  c.tls = std::make_unique<asio::ssl::stream<tcp::socket&>>(c.socket, *ctx);
  error_code ec;
  co_await c.tls->async_handshake(type, redirect_error(use_awaitable, ec));
  if (ec && c.timed_out) {
    co_return Status::DeadlineExceeded(
        fmt::format("TLS handshake with {}: {}", c.remote, c.Failure(ec)));
  }
  if (ec) {
    co_return Status::Unauthenticated(fmt::format(
        "TLS handshake with {} failed (a different cluster secret or CA, or a peer without "
        "TLS): {}",
        c.remote, ec.message()));
  }
  co_return Status::Ok();
}

template <typename Buffer>
awaitable<void> ReadExactly(Conn& c, Buffer buffer, error_code& ec) {
  if (c.tls) {
    co_await asio::async_read(*c.tls, buffer, redirect_error(use_awaitable, ec));
  } else {
    co_await asio::async_read(c.socket, buffer, redirect_error(use_awaitable, ec));
  }
}

template <typename Buffer>
awaitable<void> WriteAll(Conn& c, Buffer buffer, error_code& ec) {
  if (c.tls) {
    co_await asio::async_write(*c.tls, buffer, redirect_error(use_awaitable, ec));
  } else {
    co_await asio::async_write(c.socket, buffer, redirect_error(use_awaitable, ec));
  }
}

// Closes `c` once its deadline passes, from before its socket opens (a resolve or connect counts
// against the deadline too) until Close. Re-arms when ExpireAfter moves the deadline.
awaitable<void> Watchdog(std::shared_ptr<Conn> c) {
  while (!c->closed) {
    c->timer.expires_at(c->deadline);
    error_code ec;
    co_await c->timer.async_wait(redirect_error(use_awaitable, ec));
    if (!c->closed && SteadyClock::now() >= c->deadline) {
      c->timed_out = true;
      c->Close();
    }
  }
}

}  // namespace

// Everything known about one peer region. Atomics and `mu` make it readable from any thread;
// only the replication thread writes it. Shared: the links' coroutines keep a peer removed by
// SetPeers alive until they end.
struct PeerState {
  PeerAddress address;               // Immutable: a peer whose address changes is replaced.
  std::atomic<bool> removed{false};  // By SetPeers: its links end and are not retried.
  std::atomic<int> outbound{static_cast<int>(LinkState::kConnecting)};
  std::atomic<bool> inbound{false};
  std::atomic<int64_t> last_contact_ms{0};
  std::atomic<int64_t> fresh_ns{kNever};
  std::atomic<int64_t> rtt_us{0};
  std::atomic<uint32_t> epoch{0};        // The peer's data-directory epoch, from its latest hello.
  std::atomic<int64_t> min_rtt_us{0};    // Smallest round trip ever measured (0: none yet).
  std::atomic<bool> pull_wanted{false};  // Send a Pull on the outbound link at once.
  std::atomic<uint64_t> acked_seq{0};    // Our writes the peer said it applied (this life).
  // The clock-based bound (docs/consistency.md): the latest watermark covered (the peer's wall
  // time, us), and the peer's clock as measured on our outbound link.
  std::atomic<int64_t> covered_unix_us{kNever};
  std::atomic<int64_t> clock_offset_us{0};
  std::atomic<int64_t> clock_delay_us{-1};  // -1: not measured yet.
  std::atomic<bool> clock_within_error{false};
  std::atomic<bool> clock_flagged_logged{false};
  consistency::ClockFilter clock_filter;  // Replication thread only.
  Counter* deltas_sent = nullptr;
  Counter* deltas_applied = nullptr;
  Counter* bytes_sent = nullptr;
  Counter* bytes_received = nullptr;
  Counter* reconnects = nullptr;
  Counter* ae_rounds = nullptr;
  Counter* ae_repaired = nullptr;
  Histogram* lag = nullptr;
  mutable std::mutex mu;
  std::string last_error;  // GUARDED_BY(mu)

  // The strong layer's calls (strong::Transport) go out on the established outbound link.
  std::atomic<bool> calls_ready{false};  // Established, and the peer accepts calls.

  // Replication thread only.
  std::shared_ptr<Conn> outbound_conn;  // While established and accepting calls.
  uint64_t next_call_id = 1;
  std::map<uint64_t, strong::Transport::ReplyCallback> calls;  // Awaiting their reply.
  std::shared_ptr<Conn> inbound_conn;
  std::shared_ptr<Conn> dialing;  // The outbound connection being made or used.
  asio::steady_timer* send_timer = nullptr;
  asio::steady_timer* backoff_timer = nullptr;  // While the outbound link waits to reconnect.

  void SetError(std::string e) {
    std::lock_guard lock(mu);
    last_error = std::move(e);
  }
  std::string Error() const {
    std::lock_guard lock(mu);
    return last_error;
  }
  void Touch() { last_contact_ms.store(RealClock()->NowUnixMillis(), std::memory_order_relaxed); }
};

struct Replicator::Impl : std::enable_shared_from_this<Replicator::Impl> {
  Impl(ReplicatorOptions o, service::Keyspace* c) : options(std::move(o)), counters(c) {}

  awaitable<Status> WriteFrame(Conn& c, const pb::Frame& f, PeerState* p);
  // Our writes every peer has acknowledged -> the Keyspace's stable seq of our region.
  void UpdateStable() {
    uint64_t stable = UINT64_MAX;
    for (const auto& peer : peers) stable = std::min(stable, peer->acked_seq.load());
    if (stable != UINT64_MAX) counters->SetStableSeq(options.region, counters->epoch(), stable);
  }
  // Writes `f` on `conn` without waiting for it (a failed write closes the connection).
  // Replication thread only.
  void Send(std::shared_ptr<Conn> conn, pb::Frame f, PeerState* p);
  awaitable<StatusOr<pb::Frame>> ReadFrame(Conn& c, size_t max_bytes, PeerState* p);
  awaitable<void> Accept();
  awaitable<void> RunInbound(std::shared_ptr<Conn> conn);
  awaitable<void> RunOutbound(std::shared_ptr<PeerState> p);
  awaitable<Status> Push(PeerState* p, std::shared_ptr<Conn> conn, bool* connected);
  // The peer of `region`, or null. Replication thread, or any thread holding peers_mu.
  std::shared_ptr<PeerState> Find(std::string_view region) const;
  // A new peer with its metrics (re-registering a region returns its earlier counters).
  std::shared_ptr<PeerState> MakePeer(const PeerAddress& a);
  // Replication thread only: replaces the peer set (SetPeers).
  void ApplyPeers(const std::vector<PeerAddress>& next);
  void RemovePeer(PeerState* p);
  void Kick();
  void Refuse(PeerState* p, const std::string& who, const std::string& why);
  void MeasureClock(PeerState* p, consistency::OffsetSample sample);
  // How stale this node's copy of p's writes may be, in ns: the smaller of the clock-free and
  // (while p's clock is within the error) the clock-based bound; nullopt when p was never heard.
  std::optional<int64_t> PeerBoundNs(const PeerState& p, int64_t now_ns, int64_t now_us) const;
  std::optional<int64_t> ClockBoundNs(const PeerState& p, int64_t now_us) const;

  const ReplicatorOptions options;
  service::Keyspace* const counters;
  asio::io_context ioc{1};
  std::optional<tcp::acceptor> acceptor;
  std::thread thread;
  MetricsRegistry* metrics = nullptr;
  std::atomic<bool> peers_set{false};  // Static peers, or SetPeers applied once.
  // Written on the replication thread only, under a unique lock of peers_mu; read there without
  // it, and elsewhere under a shared lock.
  std::vector<std::shared_ptr<PeerState>> peers;
  mutable std::shared_mutex peers_mu;
  std::set<std::shared_ptr<Conn>> conns;  // Replication thread only; closed by Stop.
  std::atomic<bool> kick_pending{false};
  std::function<void()> progress_listener;        // Set before Start.
  strong::Transport::Handler call_handler;        // Set before Start.
  std::function<std::string()> strong_status;     // Set before Start.
  std::function<std::string()> discovery_status;  // Set before Start.
  std::atomic<bool> stopped{false};
  bool stopping = false;  // Replication thread only.
  Counter* refused = nullptr;
  uint16_t bound_port = 0;
  // Set by Start; replaced by ReloadTls. Replication thread only after Start.
  std::shared_ptr<PeerTls> tls;
};

namespace {

// Applies remote slots through the writer and resumes the coroutine on the replication thread.
template <typename Token>
auto AsyncApply(service::Keyspace* svc, asio::io_context& ioc, std::string origin, uint32_t epoch,
                uint64_t covers, std::vector<service::SlotUpdate> slots,
                std::vector<service::RegisterUpdate> registers, Token&& token) {
  return asio::async_initiate<Token, void(Status)>(
      [svc, &ioc, epoch](auto handler, std::string origin, uint64_t covers,
                         std::vector<service::SlotUpdate> slots,
                         std::vector<service::RegisterUpdate> registers) {
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        svc->ApplyRemote(
            std::move(origin), epoch, covers, std::move(slots),
            [h, &ioc](Status s) {
              asio::post(ioc, [h, s = std::move(s)]() mutable { (*h)(std::move(s)); });
            },
            std::move(registers));
      },
      token, std::move(origin), covers, std::move(slots), std::move(registers));
}

}  // namespace

awaitable<Status> Replicator::Impl::WriteFrame(Conn& c, const pb::Frame& f, PeerState* p) {
  std::string buf(4, '\0');
  if (!f.AppendToString(&buf)) co_return Status::Internal("cannot serialize frame");
  uint32_t n = static_cast<uint32_t>(buf.size() - 4);
  buf[0] = static_cast<char>(n >> 24);
  buf[1] = static_cast<char>(n >> 16);
  buf[2] = static_cast<char>(n >> 8);
  buf[3] = static_cast<char>(n);
  if (c.writing) {
    // Another write is in flight: it sends this one after its own, in order.
    c.queued_bytes += buf.size();
    c.queued.push_back(std::move(buf));
    if (c.queued_bytes > kMaxQueuedBytes) {
      c.Close();
      co_return Status::Unavailable(
          fmt::format("{} stopped reading ({} bytes queued)", c.remote, c.queued_bytes));
    }
    co_return Status::Ok();
  }
  c.writing = true;
  Status result = Status::Ok();
  for (;;) {
    error_code ec;
    co_await WriteAll(c, asio::buffer(buf), ec);
    if (ec) {
      result = Status::Unavailable("write to " + c.remote + ": " + c.Failure(ec));
      c.Close();
      break;
    }
    if (p) p->bytes_sent->Inc(buf.size());
    if (c.queued.empty()) break;
    buf = std::move(c.queued.front());
    c.queued.pop_front();
    c.queued_bytes -= buf.size();
  }
  c.writing = false;
  c.queued.clear();
  c.queued_bytes = 0;
  co_return result;
}

awaitable<StatusOr<pb::Frame>> Replicator::Impl::ReadFrame(Conn& c, size_t max_bytes,
                                                           PeerState* p) {
  unsigned char header[4];
  error_code ec;
  co_await ReadExactly(c, asio::buffer(header), ec);
  if (ec) co_return Status::Unavailable("read from " + c.remote + ": " + c.Failure(ec));
  uint32_t n = (uint32_t{header[0]} << 24) | (uint32_t{header[1]} << 16) |
               (uint32_t{header[2]} << 8) | uint32_t{header[3]};
  if (n > max_bytes) {
    co_return Status::InvalidArgument(
        fmt::format("frame of {} bytes from {} exceeds the {} byte limit", n, c.remote, max_bytes));
  }
  std::string body(n, '\0');
  co_await ReadExactly(c, asio::buffer(body), ec);
  if (ec) co_return Status::Unavailable("read from " + c.remote + ": " + c.Failure(ec));
  if (p) p->bytes_received->Inc(n + 4);
  pb::Frame f;
  if (!f.ParseFromString(body)) {
    co_return Status::InvalidArgument("malformed frame from " + c.remote);
  }
  co_return f;
}

void Replicator::Impl::Send(std::shared_ptr<Conn> conn, pb::Frame f, PeerState* p) {
  asio::co_spawn(
      ioc,
      [self = shared_from_this(), conn = std::move(conn), f = std::move(f),
       p]() -> awaitable<void> {
        // A failed write closes the connection; its reader then ends the link.
        Status ignored = co_await self->WriteFrame(*conn, f, p);
        (void)ignored;
      },
      asio::detached);
}

std::shared_ptr<PeerState> Replicator::Impl::Find(std::string_view region) const {
  for (const auto& p : peers) {
    if (p->address.region == region) return p;
  }
  return nullptr;
}

void Replicator::Impl::RemovePeer(PeerState* p) {
  p->removed.store(true);
  p->SetError("removed from the peer set");
  for (std::shared_ptr<Conn>* c : {&p->dialing, &p->inbound_conn, &p->outbound_conn}) {
    if (*c) (*c)->Close();
  }
  if (p->send_timer) p->send_timer->cancel();
  if (p->backoff_timer) p->backoff_timer->cancel();
}

void Replicator::Impl::ApplyPeers(const std::vector<PeerAddress>& next) {
  if (stopping) return;
  std::vector<std::shared_ptr<PeerState>> kept, added;
  for (const std::shared_ptr<PeerState>& p : peers) {
    auto it = std::find_if(next.begin(), next.end(), [&](const PeerAddress& a) {
      return a.region == p->address.region && a.address.host == p->address.address.host &&
             a.address.port == p->address.address.port;
    });
    if (it != next.end()) {
      kept.push_back(p);
    } else {
      spdlog::info("peer {} ({}) removed", p->address.region, FormatHostPort(p->address.address));
      RemovePeer(p.get());
    }
  }
  for (const PeerAddress& a : next) {
    if (a.region == options.region) continue;
    bool known = std::any_of(kept.begin(), kept.end(),
                             [&](const auto& p) { return p->address.region == a.region; });
    if (known) continue;
    spdlog::info("peer {} ({}) added", a.region, FormatHostPort(a.address));
    added.push_back(MakePeer(a));
    kept.push_back(added.back());
  }
  {
    std::unique_lock lock(peers_mu);
    peers = std::move(kept);
  }
  for (const auto& p : added) asio::co_spawn(ioc, RunOutbound(p), asio::detached);
  UpdateStable();
  if (progress_listener) progress_listener();  // Staleness bounds changed.
}

void Replicator::Impl::Kick() {
  if (kick_pending.exchange(true)) return;
  asio::post(ioc, [self = shared_from_this()] {
    self->kick_pending.store(false);
    for (auto& p : self->peers) {
      if (p->send_timer) p->send_timer->cancel();
    }
  });
}

void Replicator::Impl::MeasureClock(PeerState* p, consistency::OffsetSample sample) {
  p->clock_filter.Add(sample);
  consistency::OffsetSample best = *p->clock_filter.Best();
  const int64_t error_us = options.max_clock_error.count() * 1000;
  bool within = error_us > 0 && consistency::ClockWithin(best, error_us);
  p->clock_offset_us.store(best.offset_us);
  p->clock_delay_us.store(best.delay_us);
  // Logged once each time the peer's clock leaves the allowed error.
  if (!within && !p->clock_flagged_logged.exchange(true)) {
    spdlog::warn(
        "peer {}'s clock is {:.1f} ms off ours (+-{:.1f} ms), beyond --max-clock-error-ms {}: "
        "its watermarks are not used; bounds for its writes are clock-free",
        p->address.region, static_cast<double>(best.offset_us) / 1000.0,
        static_cast<double>(best.delay_us) / 2000.0, options.max_clock_error.count());
  }
  if (within) p->clock_flagged_logged.store(false);
  p->clock_within_error.store(within);
}

std::optional<int64_t> Replicator::Impl::ClockBoundNs(const PeerState& p, int64_t now_us) const {
  int64_t covered = p.covered_unix_us.load(std::memory_order_relaxed);
  if (covered == kNever || !p.clock_within_error.load(std::memory_order_relaxed)) {
    return std::nullopt;
  }
  return consistency::ClockBoundUs(now_us, covered, options.max_clock_error.count() * 1000) * 1000;
}

std::optional<int64_t> Replicator::Impl::PeerBoundNs(const PeerState& p, int64_t now_ns,
                                                     int64_t now_us) const {
  int64_t f = p.fresh_ns.load(std::memory_order_relaxed);
  std::optional<int64_t> bound;
  if (f != kNever) bound = now_ns - f;
  if (std::optional<int64_t> c = ClockBoundNs(p, now_us)) bound = bound ? std::min(*bound, *c) : *c;
  return bound;
}

void Replicator::Impl::Refuse(PeerState* p, const std::string& who, const std::string& why) {
  refused->Inc();
  spdlog::warn("refused peer connection from {}: {}", who, why);
  if (p) p->SetError("refused inbound connection: " + why);
}

awaitable<void> Replicator::Impl::Accept() {
  auto self = shared_from_this();
  while (!stopping) {
    auto conn = std::make_shared<Conn>(ioc);
    error_code ec;
    co_await acceptor->async_accept(conn->socket, redirect_error(use_awaitable, ec));
    if (stopping || ec == asio::error::operation_aborted) co_return;
    if (ec) {
      spdlog::warn("peer accept failed: {}", ec.message());
      asio::steady_timer t(ioc, std::chrono::milliseconds(50));
      co_await t.async_wait(redirect_error(use_awaitable, ec));
      continue;
    }
    error_code ignored;
    auto ep = conn->socket.remote_endpoint(ignored);
    conn->remote = fmt::format("{}:{}", ep.address().to_string(), ep.port());
    conn->socket.set_option(tcp::no_delay(true), ignored);
    conns.insert(conn);
    asio::co_spawn(ioc, RunInbound(conn), asio::detached);
  }
}

awaitable<void> Replicator::Impl::RunInbound(std::shared_ptr<Conn> conn) {
  auto self = shared_from_this();
  conn->ExpireAfter(options.handshake_timeout);
  asio::co_spawn(ioc, Watchdog(conn), asio::detached);
  std::shared_ptr<PeerState> peer_ref;  // Keeps a peer removed meanwhile alive.
  PeerState* peer = nullptr;
  std::string why;
  do {
    conn->contexts = tls;
    if (Status t = co_await Secure(*conn, tls->server(), asio::ssl::stream_base::server); !t.ok()) {
      Refuse(nullptr, conn->remote, t.message());
      break;
    }
    auto hello = co_await ReadFrame(*conn, kMaxHandshakeFrameBytes, nullptr);
    if (!hello.ok() || !hello->has_hello()) {
      Refuse(nullptr, conn->remote,
             hello.ok() ? "first frame is not a hello" : hello.status().message());
      break;
    }
    const pb::Hello& h = hello->hello();
    if (h.protocol_version() != kProtocolVersion) {
      Refuse(nullptr, conn->remote, fmt::format("protocol version {}", h.protocol_version()));
      break;
    }
    peer_ref = Find(h.region());
    peer = peer_ref.get();
    if (peer == nullptr) {
      Refuse(nullptr, conn->remote,
             fmt::format("region \"{}\" is not a configured peer", h.region()));
      break;
    }
    if (h.nonce().size() != kNonceBytes) {
      Refuse(peer, conn->remote, "bad nonce");
      break;
    }
    std::string server_nonce = RandomNonce();
    pb::Frame challenge;
    auto* c = challenge.mutable_challenge();
    c->set_protocol_version(kProtocolVersion);
    c->set_region(options.region);
    c->set_nonce(server_nonce);
    c->set_proof(Proof(options.cluster_secret, kServerRole, h.nonce(), server_nonce, options.region,
                       peer->address.region));
    if (!(co_await WriteFrame(*conn, challenge, peer)).ok()) break;
    auto auth = co_await ReadFrame(*conn, kMaxHandshakeFrameBytes, peer);
    if (!auth.ok() || !auth->has_auth()) {
      Refuse(peer, conn->remote,
             auth.ok() ? "expected auth"
                       : "peer left the handshake (it may not share the cluster secret): " +
                             auth.status().message());
      break;
    }
    std::string expected = Proof(options.cluster_secret, kClientRole, h.nonce(), server_nonce,
                                 peer->address.region, options.region);
    if (!ProofEquals(expected, auth->auth().proof())) {
      Refuse(peer, conn->remote,
             fmt::format("peer claiming region {} failed authentication (wrong cluster secret)",
                         peer->address.region));
      break;
    }
    if (peer->removed.load()) break;  // Removed during the handshake.
    // Authenticated. A newer link from the same region replaces an older one.
    if (peer->inbound_conn && peer->inbound_conn != conn) peer->inbound_conn->Close();
    peer->inbound_conn = conn;
    peer->inbound.store(true);
    peer->Touch();
    // Positions are per life of the peer: a peer whose data directory was recreated starts its
    // sequence again, so what we applied of its previous life says nothing about this one.
    const uint32_t epoch = h.epoch();
    peer->epoch.store(epoch);
    if (const uint32_t known = counters->AppliedPosition(peer->address.region).epoch;
        known != 0 && epoch > known) {
      // A new life of the peer: retire the old one now (Keyspace::ApplyRemote), so that what
      // this node holds of it starts travelling back to the new life at once.
      Status s =
          co_await AsyncApply(counters, ioc, peer->address.region, epoch, 0, {}, {}, use_awaitable);
      if (!s.ok()) {
        spdlog::error("recording {}'s new life failed: {}", peer->address.region, s.ToString());
        break;
      }
    }
    pb::Frame welcome;
    welcome.mutable_welcome()->set_applied_seq(counters->AppliedSeq(peer->address.region, epoch));
    welcome.mutable_welcome()->set_accepts_pull(true);
    welcome.mutable_welcome()->set_accepts_calls(static_cast<bool>(call_handler));
    welcome.mutable_welcome()->set_accepts_records(true);
    welcome.mutable_welcome()->set_accepts_retired_lives(true);
    if (!(co_await WriteFrame(*conn, welcome, peer)).ok()) break;
    spdlog::info("peer {} connected from {}", peer->address.region, conn->remote);

    for (;;) {
      conn->ExpireAfter(options.idle_timeout);
      auto f = co_await ReadFrame(*conn, kMaxFrameBytes, peer);
      if (!f.ok()) {
        why = f.status().message();
        break;
      }
      peer->Touch();
      if (f->has_delta()) {
        const pb::Delta& d = f->delta();
        StatusOr<DecodedDelta> decoded = DecodeDelta(d);
        if (!decoded.ok()) {
          why = "bad delta: " + decoded.status().message();
          break;
        }
        const int64_t now_ms = RealClock()->NowUnixMillis();
        for (const service::SlotUpdate& u : decoded->slots) {
          if (u.slot.updated_at_ms > 0 && now_ms >= u.slot.updated_at_ms) {
            peer->lag->Observe(static_cast<double>(now_ms - u.slot.updated_at_ms) / 1000.0);
          }
        }
        for (const service::RegisterUpdate& u : decoded->registers) {
          if (u.reg.hlc.wall_ms > 0 && now_ms >= u.reg.hlc.wall_ms) {
            peer->lag->Observe(static_cast<double>(now_ms - u.reg.hlc.wall_ms) / 1000.0);
          }
        }
        size_t n = decoded->slots.size() + decoded->registers.size();
        Status applied = co_await AsyncApply(counters, ioc, peer->address.region, epoch,
                                             d.covers_seq(), std::move(decoded->slots),
                                             std::move(decoded->registers), use_awaitable);
        if (!applied.ok()) {
          why = "apply failed: " + applied.message();
          break;
        }
        peer->deltas_applied->Inc(n);
      } else if (f->has_heartbeat()) {
        const pb::Heartbeat& hb = f->heartbeat();
        counters->SetStableSeq(peer->address.region, epoch, hb.stable_seq());
        const int64_t recv_unix_us = RealClock()->NowUnixMicros();
        uint64_t applied = counters->AppliedSeq(peer->address.region, epoch);
        // Every write the peer acknowledged before its snapshot has seq <= committed_seq; the
        // snapshot happened at least age + rtt before now (one-way delay <= rtt). Heartbeats
        // sent before the peer measured a round trip say nothing.
        if (applied >= hb.committed_seq() && hb.rtt_us() > 0) {
          uint64_t back_us = std::min<uint64_t>(hb.age_us() + hb.rtt_us(), 3'600'000'000ull);
          int64_t snapshot_ns =
              RealClock()->MonotonicNanos() - static_cast<int64_t>(back_us) * 1000;
          int64_t prev = peer->fresh_ns.load();
          bool moved = false;
          if (snapshot_ns > prev) {
            peer->fresh_ns.store(snapshot_ns);
            moved = true;
          }
          // The watermark: everything the peer acknowledged before its wall time
          // snapshot_unix_us is applied here.
          if (hb.snapshot_unix_us() > peer->covered_unix_us.load()) {
            peer->covered_unix_us.store(hb.snapshot_unix_us());
            moved = true;
          }
          if (moved && progress_listener) progress_listener();
        }
        pb::Frame ack;
        ack.mutable_ack()->set_heartbeat_id(hb.id());
        ack.mutable_ack()->set_applied_seq(applied);
        ack.mutable_ack()->set_recv_unix_us(recv_unix_us);
        ack.mutable_ack()->set_send_unix_us(RealClock()->NowUnixMicros());
        if (!(co_await WriteFrame(*conn, ack, peer)).ok()) {
          why = "cannot acknowledge heartbeat";
          break;
        }
      } else if (f->has_pull()) {
        // The peer waits for our writes: ship them on our outbound link now.
        if (peer->send_timer) peer->send_timer->cancel();
      } else if (f->has_call() && call_handler) {
        // Answered whenever the strong layer is done, on this connection, if it still stands.
        const uint64_t id = f->call().id();
        call_handler(
            peer->address.region, std::move(*f->mutable_call()->mutable_payload()),
            // Weak: a reply kept by the strong layer must keep neither the loop nor
            // the connection (whose socket belongs to the loop) alive.
            [w = weak_from_this(), wc = std::weak_ptr<Conn>(conn), id](std::string payload) {
              auto self = w.lock();
              if (!self) return;
              pb::Frame reply;
              reply.mutable_call_reply()->set_id(id);
              reply.mutable_call_reply()->set_payload(std::move(payload));
              asio::post(self->ioc, [w, wc, reply = std::move(reply)]() mutable {
                auto s = w.lock();
                auto c = wc.lock();
                if (s && c && c->socket.is_open()) s->Send(c, std::move(reply), nullptr);
              });
            });
      } else {
        why = "unexpected frame on an established link";
        break;
      }
    }
  } while (false);
  if (peer && peer->inbound_conn == conn) {
    peer->inbound_conn.reset();
    peer->inbound.store(false);
    if (!why.empty() && !stopping) {
      spdlog::warn("link from {} closed: {}", peer->address.region, why);
      peer->SetError("inbound: " + why);
    }
  }
  conn->Close();
  conns.erase(conn);
}

awaitable<void> Replicator::Impl::RunOutbound(std::shared_ptr<PeerState> peer) {
  auto self = shared_from_this();
  PeerState* p = peer.get();
  std::chrono::milliseconds backoff = kMinBackoff;
  std::mt19937_64 rng(std::random_device{}());
  bool first = true;
  while (!stopping && !p->removed.load()) {
    if (!first) p->reconnects->Inc();
    first = false;
    p->outbound.store(static_cast<int>(LinkState::kConnecting));
    auto conn = std::make_shared<Conn>(ioc);
    conn->remote = FormatHostPort(p->address.address);
    conns.insert(conn);
    p->dialing = conn;
    bool connected = false;
    Status st = co_await Push(p, conn, &connected);
    conn->Close();
    conns.erase(conn);
    if (p->dialing == conn) p->dialing.reset();
    if (stopping || p->removed.load()) break;
    p->SetError("outbound: " + st.message());
    spdlog::warn("link to {} ({}): {}", p->address.region, conn->remote, st.message());
    if (connected) backoff = kMinBackoff;
    p->outbound.store(static_cast<int>(LinkState::kBackoff));
    std::uniform_real_distribution<double> jitter(0.8, 1.2);
    asio::steady_timer t(ioc, std::chrono::milliseconds(static_cast<int64_t>(
                                  static_cast<double>(backoff.count()) * jitter(rng))));
    error_code ec;
    p->backoff_timer = &t;
    co_await t.async_wait(redirect_error(use_awaitable, ec));
    p->backoff_timer = nullptr;
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
  p->outbound.store(static_cast<int>(LinkState::kStopped));
}

awaitable<Status> Replicator::Impl::Push(PeerState* p, std::shared_ptr<Conn> conn,
                                         bool* connected) {
  conn->ExpireAfter(options.connect_timeout);
  asio::co_spawn(ioc, Watchdog(conn), asio::detached);
  tcp::resolver resolver(ioc);
  error_code ec;
  auto endpoints = co_await resolver.async_resolve(p->address.address.host,
                                                   std::to_string(p->address.address.port),
                                                   redirect_error(use_awaitable, ec));
  if (ec) co_return Status::Unavailable("resolve " + conn->remote + ": " + conn->Failure(ec));
  // Closed meanwhile (shutdown, the peer removed, or the connect deadline): connecting now would
  // open a socket nothing closes any more.
  if (conn->closed) {
    co_return Status::Unavailable("resolve " + conn->remote + ": " +
                                  conn->Failure(asio::error::operation_aborted));
  }
  co_await asio::async_connect(conn->socket, endpoints, redirect_error(use_awaitable, ec));
  if (ec) co_return Status::Unavailable("connect " + conn->remote + ": " + conn->Failure(ec));
  conn->socket.set_option(tcp::no_delay(true), ec);

  p->outbound.store(static_cast<int>(LinkState::kHandshaking));
  conn->ExpireAfter(options.handshake_timeout);
  conn->contexts = tls;
  if (Status t = co_await Secure(*conn, tls->client(), asio::ssl::stream_base::client); !t.ok()) {
    // A peer that does not answer is unreachable, not refused.
    if (t.code() == StatusCode::kUnauthenticated) refused->Inc();
    co_return t;
  }
  std::string client_nonce = RandomNonce();
  pb::Frame hello;
  hello.mutable_hello()->set_protocol_version(kProtocolVersion);
  hello.mutable_hello()->set_region(options.region);
  hello.mutable_hello()->set_nonce(client_nonce);
  hello.mutable_hello()->set_epoch(counters->epoch());
  if (Status s = co_await WriteFrame(*conn, hello, p); !s.ok()) co_return s;
  auto challenge = co_await ReadFrame(*conn, kMaxHandshakeFrameBytes, p);
  if (!challenge.ok()) {
    co_return Status::Unavailable("peer closed the handshake (unknown region or protocol?): " +
                                  challenge.status().message());
  }
  if (!challenge->has_challenge()) co_return Status::InvalidArgument("expected a challenge");
  const pb::Challenge& c = challenge->challenge();
  if (c.region() != p->address.region) {
    co_return Status::InvalidArgument(
        fmt::format("{} answers as region \"{}\"", conn->remote, c.region()));
  }
  std::string expected = Proof(options.cluster_secret, kServerRole, client_nonce, c.nonce(),
                               p->address.region, options.region);
  if (!ProofEquals(expected, c.proof())) {
    refused->Inc();
    co_return Status::Unauthenticated(
        fmt::format("{} failed authentication (wrong cluster secret)", conn->remote));
  }
  pb::Frame auth;
  auth.mutable_auth()->set_proof(Proof(options.cluster_secret, kClientRole, client_nonce, c.nonce(),
                                       options.region, p->address.region));
  if (Status s = co_await WriteFrame(*conn, auth, p); !s.ok()) co_return s;
  auto welcome = co_await ReadFrame(*conn, kMaxHandshakeFrameBytes, p);
  if (!welcome.ok()) {
    co_return Status::Unauthenticated("peer refused us (wrong cluster secret?): " +
                                      welcome.status().message());
  }
  if (!welcome->has_welcome()) co_return Status::InvalidArgument("expected a welcome");
  const bool accepts_pull = welcome->welcome().accepts_pull();
  const bool accepts_calls = welcome->welcome().accepts_calls();
  const bool accepts_records = welcome->welcome().accepts_records();
  const bool accepts_retired = welcome->welcome().accepts_retired_lives();
  if (!accepts_records) {
    spdlog::warn(
        "peer {} runs a version without keys: they do not replicate to it until it is "
        "upgraded",
        p->address.region);
  }
  // While this link stands it carries the strong layer's calls; when it goes, every call still
  // waiting for its reply fails (it may or may not have reached the peer).
  struct CallsGuard {
    PeerState* p;
    std::shared_ptr<Conn> conn;
    ~CallsGuard() {
      if (p->outbound_conn != conn) return;
      p->calls_ready.store(false);
      p->outbound_conn.reset();
      auto calls = std::move(p->calls);
      p->calls.clear();
      for (auto& [id, done] : calls) {
        done(Status::Unavailable("the link to " + p->address.region + " closed"), true);
      }
    }
  } calls_guard{p, conn};
  if (accepts_calls) {
    p->outbound_conn = conn;
    p->calls_ready.store(true);
  }

  // Established: ship everything after what the peer has (anti-entropy), then stream.
  *connected = true;
  p->outbound.store(static_cast<int>(LinkState::kConnected));
  p->Touch();
  p->ae_rounds->Inc();
  struct SendState {
    // The pass (Keyspace::CollectOwnChanges): where it goes on, and what the peer holds once it
    // applied everything sent.
    uint64_t cursor = 0;
    uint64_t covered = 0;
    uint64_t catch_up_until = 0;
    uint64_t next_id = 1;
    // id, sent (monotonic ns), seq, sent (wall us).
    std::deque<std::tuple<uint64_t, int64_t, uint64_t, int64_t>> pending;
    std::optional<uint64_t> rewind_to;
    bool window_wait = false;  // The sender waits for acknowledgments, not for the interval.
    int64_t min_rtt_us = 0;    // Smallest round trip seen on this connection (0: none yet).
    size_t Window(std::chrono::milliseconds interval) const {
      int64_t period_us = std::max<int64_t>(interval.count(), kStreamingHeartbeat.count()) * 1000;
      return kMinUnackedHeartbeats + static_cast<size_t>(min_rtt_us / period_us);
    }
    std::string error;
  };
  auto state = std::make_shared<SendState>();
  state->cursor = state->covered = welcome->welcome().applied_seq();
  state->catch_up_until = counters->CommittedSeq();
  p->acked_seq.store(state->cursor);
  UpdateStable();
  spdlog::info("link to {} up; peer has our writes up to seq {}, we are at {}", p->address.region,
               state->cursor, state->catch_up_until);
  conn->ExpireAfter(options.idle_timeout);

  // Acknowledgments: round trips, and the peer's applied position (rewind if it fell behind).
  asio::co_spawn(
      ioc,
      [this, self = shared_from_this(), p, conn, state]() -> awaitable<void> {
        while (conn->socket.is_open()) {
          auto f = co_await ReadFrame(*conn, kMaxFrameBytes, p);
          if (f.ok() && f->has_call_reply()) {
            p->Touch();
            auto it = p->calls.find(f->call_reply().id());
            if (it != p->calls.end()) {
              auto done = std::move(it->second);
              p->calls.erase(it);
              done(std::move(*f->mutable_call_reply()->mutable_payload()), true);
            }
            continue;
          }
          if (!f.ok() || !f->has_ack()) {
            state->error = f.ok() ? "unexpected frame from peer" : f.status().message();
            conn->Close();
            co_return;
          }
          conn->ExpireAfter(options.idle_timeout);
          p->Touch();
          const pb::Ack& a = f->ack();
          const int64_t recv_unix_us = RealClock()->NowUnixMicros();
          while (!state->pending.empty() &&
                 std::get<0>(state->pending.front()) <= a.heartbeat_id()) {
            auto [id, sent_ns, seq, sent_unix_us] = state->pending.front();
            state->pending.pop_front();
            if (id != a.heartbeat_id()) continue;
            if (a.recv_unix_us() != 0 && a.send_unix_us() != 0) {
              MeasureClock(p, consistency::MeasureOffset(sent_unix_us, a.recv_unix_us(),
                                                         a.send_unix_us(), recv_unix_us));
            }
            int64_t rtt = std::max<int64_t>(1, (RealClock()->MonotonicNanos() - sent_ns) / 1000);
            p->rtt_us.store(rtt);
            int64_t min_rtt = p->min_rtt_us.load();
            if (min_rtt == 0 || rtt < min_rtt) p->min_rtt_us.store(rtt);
            if (state->min_rtt_us == 0 || rtt < state->min_rtt_us) state->min_rtt_us = rtt;
            if (state->window_wait && p->send_timer) {
              p->send_timer->cancel();  // The window opened: the sender may go on.
            }
            // The peer reads frames in order and applies each delta before the next frame,
            // so by this heartbeat it should hold `seq`; less means it lost applied state.
            if (a.applied_seq() < seq) state->rewind_to = a.applied_seq();
            p->acked_seq.store(a.applied_seq());
            UpdateStable();
          }
        }
      },
      asio::detached);

  asio::steady_timer send_timer(ioc);
  p->send_timer = &send_timer;
  struct ClearTimer {
    PeerState* p;
    ~ClearTimer() { p->send_timer = nullptr; }
  } clear_timer{p};
  while (conn->socket.is_open() && !stopping) {
    if (state->pending.size() >= state->Window(options.interval)) {
      state->window_wait = true;
      send_timer.expires_after(options.idle_timeout);
      error_code ec;
      co_await send_timer.async_wait(redirect_error(use_awaitable, ec));
      state->window_wait = false;
      continue;
    }
    if (state->rewind_to) {
      spdlog::warn("peer {} is behind what it was sent (has {}, sent {}); resending",
                   p->address.region, *state->rewind_to, state->cursor);
      state->cursor = std::min(state->cursor, *state->rewind_to);
      state->covered = std::min(state->covered, *state->rewind_to);
      state->catch_up_until = counters->CommittedSeq();
      state->rewind_to.reset();
      p->ae_rounds->Inc();
    }
    if (p->pull_wanted.exchange(false) && accepts_pull) {
      pb::Frame pull;
      pull.mutable_pull();
      if (Status s = co_await WriteFrame(*conn, pull, p); !s.ok()) co_return s;
    }
    int64_t snapshot_ns = RealClock()->MonotonicNanos();
    const int64_t snapshot_unix_us = RealClock()->NowUnixMicros();  // Before the sequence.
    std::vector<service::SlotUpdate> slots;
    std::vector<service::RegisterUpdate> registers;
    const service::Keyspace::CollectedChanges got = counters->CollectOwnChanges(
        state->cursor, kMaxDeltaEntries, &slots, accepts_calls,
        accepts_records ? &registers : nullptr, 4u << 20, accepts_retired);
    using End = service::Keyspace::CollectedChanges::End;
    // A pass ends with its complete call: only then does what was shipped cover more.
    const uint64_t covers =
        got.end == End::kComplete ? std::max(state->covered, got.covers) : state->covered;
    if (covers > state->covered || !slots.empty() || !registers.empty()) {
      pb::Frame delta;
      delta.mutable_delta()->set_covers_seq(covers);
      for (const auto& u : registers) {
        pb::RecordDelta* r = delta.mutable_delta()->add_records();
        r->set_type(static_cast<unsigned char>(u.type));
        r->set_name(u.name);
        r->set_state(storage::EncodeRegister(u.reg));
        r->set_stream_seq(u.stream_seq);
      }
      for (const auto& u : slots) {
        pb::SlotDelta* d = delta.mutable_delta()->add_slots();
        d->set_name(u.name);
        d->set_inc(u.slot.inc);
        d->set_dec(u.slot.dec);
        d->set_version(u.slot.version);
        d->set_updated_at_ms(u.slot.updated_at_ms);
        if (!u.origin.empty()) d->set_origin(u.origin);
      }
      if (Status s = co_await WriteFrame(*conn, delta, p); !s.ok()) co_return s;
      p->deltas_sent->Inc(slots.size() + registers.size());
      if (state->cursor < state->catch_up_until) {
        p->ae_repaired->Inc(slots.size() + registers.size());
      }
    }
    state->cursor = got.resume_after;
    state->covered = covers;
    // A limit: more to ship at once before a heartbeat may vouch for the snapshot. A failure
    // (logged by the keyspace): no heartbeat either; the pass goes on after the interval.
    if (got.end == End::kLimit) continue;
    if (got.end == End::kComplete) {
      pb::Frame hb;
      uint64_t id = state->next_id++;
      hb.mutable_heartbeat()->set_id(id);
      hb.mutable_heartbeat()->set_committed_seq(covers);
      int64_t now_ns = RealClock()->MonotonicNanos();
      hb.mutable_heartbeat()->set_age_us(static_cast<uint64_t>((now_ns - snapshot_ns) / 1000));
      hb.mutable_heartbeat()->set_rtt_us(static_cast<uint64_t>(p->rtt_us.load()));
      hb.mutable_heartbeat()->set_snapshot_unix_us(snapshot_unix_us);
      const int64_t send_unix_us = RealClock()->NowUnixMicros();
      hb.mutable_heartbeat()->set_send_unix_us(send_unix_us);
      hb.mutable_heartbeat()->set_stable_seq(counters->StableSeq(options.region));
      state->pending.emplace_back(id, now_ns, covers, send_unix_us);
      if (state->pending.size() > 1024) state->pending.pop_front();
      if (Status s = co_await WriteFrame(*conn, hb, p); !s.ok()) co_return s;
    }

    auto wait = options.interval.count() > 0 ? options.interval : kStreamingHeartbeat;
    send_timer.expires_after(wait);
    error_code ec;
    co_await send_timer.async_wait(redirect_error(use_awaitable, ec));
  }
  co_return Status::Unavailable(state->error.empty() ? "link closed" : state->error);
}

std::shared_ptr<PeerState> Replicator::Impl::MakePeer(const PeerAddress& a) {
  auto p = std::make_shared<PeerState>();
  p->address = a;
  std::string l = fmt::format("peer=\"{}\"", a.region);
  p->deltas_sent = &metrics->AddCounter("edgestate_replication_deltas_sent_total",
                                        "Counter slots shipped to a peer.", l);
  p->deltas_applied = &metrics->AddCounter("edgestate_replication_deltas_applied_total",
                                           "Counter slots received from a peer and applied.", l);
  p->bytes_sent = &metrics->AddCounter("edgestate_replication_bytes_sent_total",
                                       "Bytes written to a peer's links.", l);
  p->bytes_received = &metrics->AddCounter("edgestate_replication_bytes_received_total",
                                           "Bytes read from a peer's links.", l);
  p->reconnects = &metrics->AddCounter("edgestate_replication_reconnects_total",
                                       "Outbound link reconnect attempts.", l);
  p->ae_rounds = &metrics->AddCounter(
      "edgestate_anti_entropy_rounds_total",
      "Version exchanges that (re)started shipping from the peer's applied position.", l);
  p->ae_repaired = &metrics->AddCounter(
      "edgestate_anti_entropy_repaired_total",
      "Counter slots shipped to catch a peer up after a (re)connect or a rewind.", l);
  p->lag = &metrics->AddHistogram(
      "edgestate_replication_lag_seconds",
      "Time from a write at the peer to its application here (peer wall clock).",
      ExponentialBuckets(0.001, 2, 16), l);
  // Weak: a removed peer's gauges read NaN (until its region is added again).
  std::weak_ptr<PeerState> weak = p;
  constexpr double kGone = std::numeric_limits<double>::quiet_NaN();
  metrics->AddGauge(
      "edgestate_replication_peer_staleness_seconds",
      "This node reflects every write the peer acknowledged more than this long ago.",
      [weak, w = weak_from_this()] {
        auto peer = weak.lock();
        auto impl = w.lock();
        if (!peer || !impl) return kGone;
        auto b =
            impl->PeerBoundNs(*peer, RealClock()->MonotonicNanos(), RealClock()->NowUnixMicros());
        return b ? static_cast<double>(*b) / 1e9 : std::numeric_limits<double>::infinity();
      },
      l);
  metrics->AddGauge(
      "edgestate_peer_clock_offset_seconds",
      "How far the peer's wall clock is ahead of ours (NTP-style, from heartbeat timing).",
      [weak] {
        auto peer = weak.lock();
        return peer ? static_cast<double>(peer->clock_offset_us.load()) / 1e6 : kGone;
      },
      l);
  metrics->AddGauge(
      "edgestate_peer_clock_within_error",
      "1 while the peer's clock is within --max-clock-error-ms (its watermarks are used).",
      [weak] {
        auto peer = weak.lock();
        return peer ? (peer->clock_within_error.load() ? 1.0 : 0.0) : kGone;
      },
      l);
  return p;
}

namespace {
// An idle link hears from its peer once per interval: silence is judged in intervals when they
// are long (the interval may be up to a minute, the default idle timeout is 30 s).
ReplicatorOptions WithIdleTimeoutOfIntervals(ReplicatorOptions o) {
  o.idle_timeout = std::max(o.idle_timeout, 3 * o.interval);
  return o;
}
}  // namespace

Replicator::Replicator(ReplicatorOptions options, service::Keyspace* counters,
                       MetricsRegistry* metrics)
    : impl_(std::make_shared<Impl>(WithIdleTimeoutOfIntervals(std::move(options)), counters)) {
  impl_->metrics = metrics;
  impl_->peers_set.store(!impl_->options.peers_discovered);
  impl_->refused = &metrics->AddCounter(
      "edgestate_replication_refused_peers_total",
      "Peer connections refused: unknown region, bad protocol, failed authentication, or an "
      "inbound connection that did not complete its handshake in time.");
  for (const PeerAddress& a : impl_->options.peers) impl_->peers.push_back(impl_->MakePeer(a));
}

Replicator::~Replicator() { Stop(); }

Status Replicator::ReloadTls() {
  if (impl_->options.tls.mode != PeerTlsOptions::Mode::kCertificates) {
    return Status::FailedPrecondition("peer links use no certificate files");
  }
  auto fresh = PeerTls::Create(impl_->options.tls, impl_->options.cluster_secret);
  if (!fresh.ok()) return fresh.status();
  std::shared_ptr<PeerTls> next = std::move(fresh).value();
  // Weak: a handler that never runs (the loop stopped) must not keep the replicator alive.
  asio::post(impl_->ioc, [w = std::weak_ptr<Impl>(impl_), next = std::move(next)]() mutable {
    if (auto self = w.lock()) self->tls = std::move(next);
  });
  return Status::Ok();
}

Status Replicator::Start() {
  Impl& s = *impl_;
  auto tls = PeerTls::Create(s.options.tls, s.options.cluster_secret);
  if (!tls.ok()) return tls.status();
  s.tls = std::move(tls).value();
  if (s.tls->mode() == PeerTlsOptions::Mode::kPlaintext) {
    spdlog::warn(
        "--peer-insecure-plaintext: peer links are NOT encrypted; anyone on the path reads "
        "and can alter every replicated write");
  }
  s.acceptor.emplace(s.ioc);
  auto port = net::Listen(*s.acceptor, s.options.listen.host, s.options.listen.port, "peers");
  if (!port.ok()) return port.status();
  s.bound_port = *port;
  if (s.options.interval.count() == 0) {  // Streaming: every commit wakes the senders.
    std::weak_ptr<Impl> weak = impl_;
    s.counters->SetCommitListener([weak] {
      if (auto self = weak.lock()) self->Kick();
    });
  }
  asio::co_spawn(s.ioc, s.Accept(), asio::detached);
  for (auto& p : s.peers) asio::co_spawn(s.ioc, s.RunOutbound(p), asio::detached);
  s.thread = std::thread([impl = impl_.get()] { net::RunLoop(impl->ioc, "es-replication"); });
  return Status::Ok();
}

uint16_t Replicator::peer_port() const { return impl_->bound_port; }

Status Replicator::SetPeers(std::vector<PeerAddress> peers) {
  std::set<std::string, std::less<>> seen;
  for (const PeerAddress& a : peers) {
    if (Status st = ValidateRegionName(a.region); !st.ok()) return st;
    if (!seen.insert(a.region).second) {
      return Status::InvalidArgument(fmt::format("peer region {} is listed twice", a.region));
    }
    if (a.address.host.empty() || a.address.port == 0) {
      return Status::InvalidArgument(fmt::format("peer {} has no address", a.region));
    }
  }
  if (!impl_->thread.joinable() || impl_->stopped.load()) {
    return Status::FailedPrecondition("the replicator is not running");
  }
  asio::post(impl_->ioc, [w = std::weak_ptr<Impl>(impl_), peers = std::move(peers)] {
    auto self = w.lock();
    if (!self) return;
    self->ApplyPeers(peers);
    self->peers_set.store(true);
  });
  return Status::Ok();
}

void Replicator::Stop() {
  Impl& s = *impl_;
  if (s.stopped.exchange(true)) return;
  if (!s.thread.joinable()) return;
  asio::post(s.ioc, [&s] {
    s.stopping = true;
    error_code ec;
    if (s.acceptor) s.acceptor->close(ec);
    for (auto& c : s.conns) c->Close();
    for (auto& p : s.peers) {
      if (p->send_timer) p->send_timer->cancel();
      if (p->backoff_timer) p->backoff_timer->cancel();
    }
  });
  net::StopLoop(s.ioc, s.thread, std::chrono::seconds(10));
}

std::optional<int64_t> Replicator::StalenessMs() const {
  if (!impl_->peers_set.load(std::memory_order_relaxed)) return std::nullopt;
  const int64_t now_ns = RealClock()->MonotonicNanos(), now_us = RealClock()->NowUnixMicros();
  int64_t worst = 0;
  std::shared_lock lock(impl_->peers_mu);
  for (const auto& p : impl_->peers) {
    std::optional<int64_t> b = impl_->PeerBoundNs(*p, now_ns, now_us);
    if (!b) return std::nullopt;
    worst = std::max(worst, *b);
  }
  return (worst + 999'999) / 1'000'000;
}

std::optional<int64_t> Replicator::StalenessFloorMs() const {
  if (!impl_->peers_set.load(std::memory_order_relaxed)) return std::nullopt;
  int64_t worst = 0;
  std::shared_lock lock(impl_->peers_mu);
  for (const auto& p : impl_->peers) {
    int64_t r = p->min_rtt_us.load(std::memory_order_relaxed);
    if (r == 0) return std::nullopt;
    // Clock-free: a round trip at best. Clock-based: one way (about half the round trip) plus
    // the allowed error, right after a watermark arrives.
    if (p->clock_within_error.load(std::memory_order_relaxed)) {
      r = std::min(r, r / 2 + impl_->options.max_clock_error.count() * 1000);
    }
    worst = std::max(worst, r);
  }
  return (worst + 999) / 1000;
}

void Replicator::Pull(const std::vector<std::string>& regions) {
  bool any = false;
  std::shared_lock lock(impl_->peers_mu);
  for (const auto& p : impl_->peers) {
    if (!regions.empty() &&
        std::find(regions.begin(), regions.end(), p->address.region) == regions.end()) {
      continue;
    }
    if (!p->pull_wanted.exchange(true)) any = true;
  }
  if (!any) return;  // Pulls already on their way cover this one.
  // Wake only the senders that carry a pull; each sends its Pull frame before its next delta.
  asio::post(impl_->ioc, [impl = impl_] {
    for (auto& p : impl->peers) {
      if (p->pull_wanted.load() && p->send_timer) p->send_timer->cancel();
    }
  });
}

void Replicator::SetProgressListener(std::function<void()> listener) {
  impl_->progress_listener = std::move(listener);
}

std::string Replicator::ClusterJson() const {
  nlohmann::json j;
  j["region"] = impl_->options.region;
  j["peer_tls"] = PeerTlsModeName(impl_->options.tls.mode);
  j["replication_interval_ms"] = impl_->options.interval.count();
  j["peer_listen"] = FormatHostPort({impl_->options.listen.host, impl_->bound_port});
  j["peers_from_dns"] = impl_->options.peers_discovered;
  j["committed_seq"] = impl_->counters->CommittedSeq();
  auto st = StalenessMs();
  j["staleness_ms"] = st ? nlohmann::json(*st) : nlohmann::json(nullptr);
  j["peers"] = nlohmann::json::array();
  const int64_t now_ms = RealClock()->NowUnixMillis(), now_ns = RealClock()->MonotonicNanos();
  const int64_t now_us = RealClock()->NowUnixMicros();
  j["max_clock_error_ms"] = impl_->options.max_clock_error.count();
  std::vector<std::shared_ptr<PeerState>> peers;
  {
    std::shared_lock lock(impl_->peers_mu);
    peers = impl_->peers;
  }
  for (const auto& p : peers) {
    nlohmann::json e;
    e["region"] = p->address.region;
    e["address"] = FormatHostPort(p->address.address);
    e["outbound"] = LinkStateName(static_cast<LinkState>(p->outbound.load()));
    e["inbound"] = p->inbound.load() ? "connected" : "disconnected";
    int64_t contact = p->last_contact_ms.load();
    e["last_contact_ms_ago"] =
        contact == 0 ? nlohmann::json(nullptr) : nlohmann::json(now_ms - contact);
    int64_t f = p->fresh_ns.load();
    auto ms_or_null = [](std::optional<int64_t> ns) {
      return ns ? nlohmann::json((*ns + 999'999) / 1'000'000) : nlohmann::json(nullptr);
    };
    // lag_ms: the bound used for this peer's writes; its two parts beside it.
    e["lag_ms"] = ms_or_null(impl_->PeerBoundNs(*p, now_ns, now_us));
    e["clock_free_bound_ms"] =
        ms_or_null(f == kNever ? std::nullopt : std::optional<int64_t>(now_ns - f));
    e["clock_bound_ms"] = ms_or_null(impl_->ClockBoundNs(*p, now_us));
    int64_t delay = p->clock_delay_us.load();
    e["clock"] =
        delay < 0
            ? nlohmann::json(nullptr)
            : nlohmann::json{{"offset_ms", static_cast<double>(p->clock_offset_us.load()) / 1e3},
                             {"uncertainty_ms", static_cast<double>(delay) / 2e3},
                             {"within_error", p->clock_within_error.load()}};
    e["rtt_ms"] = static_cast<double>(p->rtt_us.load()) / 1000.0;
    consistency::OriginPosition applied = impl_->counters->AppliedPosition(p->address.region);
    e["applied_seq"] = applied.seq;
    e["applied_epoch"] = applied.epoch;
    e["sent"] = {{"deltas", p->deltas_sent->value()}, {"bytes", p->bytes_sent->value()}};
    e["received"] = {{"deltas", p->deltas_applied->value()}, {"bytes", p->bytes_received->value()}};
    e["reconnects"] = p->reconnects->value();
    e["anti_entropy"] = {{"rounds", p->ae_rounds->value()}, {"repaired", p->ae_repaired->value()}};
    std::string err = p->Error();
    e["last_error"] = err.empty() ? nlohmann::json(nullptr) : nlohmann::json(err);
    j["peers"].push_back(std::move(e));
  }
  if (impl_->strong_status) j["strong"] = nlohmann::json::parse(impl_->strong_status());
  if (impl_->discovery_status) j["discovery"] = nlohmann::json::parse(impl_->discovery_status());
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void Replicator::SetStrongStatus(std::function<std::string()> status) {
  impl_->strong_status = std::move(status);
}

void Replicator::SetDiscoveryStatus(std::function<std::string()> status) {
  impl_->discovery_status = std::move(status);
}

void Replicator::SetCallHandler(Handler handler) { impl_->call_handler = std::move(handler); }

std::optional<int64_t> Replicator::LinkRttUs(const std::string& region) const {
  std::shared_lock lock(impl_->peers_mu);
  std::shared_ptr<PeerState> p = impl_->Find(region);
  if (p == nullptr || !p->calls_ready.load()) return std::nullopt;
  // A peer that stopped answering (a stopped process keeps its connections open) is not
  // reachable: every interval brings a heartbeat or an acknowledgment from a live one.
  const int64_t silent_ms = RealClock()->NowUnixMillis() - p->last_contact_ms.load();
  const int64_t interval_ms =
      std::max<int64_t>(impl_->options.interval.count(), kStreamingHeartbeat.count());
  if (silent_ms > std::max<int64_t>(500, 5 * interval_ms)) return std::nullopt;
  int64_t rtt = p->min_rtt_us.load();
  return rtt > 0 ? rtt : std::numeric_limits<int32_t>::max();  // Unmeasured: last choice.
}

void Replicator::Call(const std::string& region, std::string payload, ReplyCallback done) {
  if (impl_->stopped.load()) {
    return done(Status::Unavailable("replication is stopped"), false);
  }
  // Weak: a handler left on a stopped loop must not keep the loop alive.
  asio::post(impl_->ioc, [w = std::weak_ptr<Impl>(impl_), region, payload = std::move(payload),
                          done = std::move(done)]() mutable {
    auto impl = w.lock();
    if (!impl) return;
    std::shared_ptr<PeerState> peer = impl->Find(region);
    PeerState* p = peer.get();
    if (p == nullptr || !p->outbound_conn || !p->outbound_conn->socket.is_open() ||
        impl->stopping) {
      return done(Status::Unavailable("no established link to " + region), false);
    }
    const uint64_t id = p->next_call_id++;
    p->calls.emplace(id, std::move(done));
    pb::Frame f;
    f.mutable_call()->set_id(id);
    f.mutable_call()->set_payload(std::move(payload));
    impl->Send(p->outbound_conn, std::move(f), p);
  });
}

std::string SingleNodeView::ClusterJson() const {
  nlohmann::json j;
  j["region"] = region_;
  j["staleness_ms"] = 0;
  j["peers"] = nlohmann::json::array();
  return j.dump();
}

}  // namespace edgestate::replication
