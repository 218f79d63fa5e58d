#include "replication/replicator.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.

#include "common/test_dir.h"
#include "net/net.h"
#include "net/test_certs.h"
#include "replication/auth.h"
#include "replication/wire.pb.h"
#include "storage/store.h"

namespace edgestate::replication {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// One region: store, counter service and replicator, in a temporary directory.
class Region {
 public:
  Region(std::string name, std::filesystem::path dir) : name_(std::move(name)), dir_(dir / name_) {}
  ~Region() { Close(); }

  // `calls`: the handler of the strong layer's calls (none: this region takes no calls).
  // `discovered`: the peers come from SetPeers (as with --peers-dns).
  void Open(uint16_t port, std::vector<PeerAddress> peers, const std::string& secret,
            strong::Transport::Handler calls = nullptr, bool discovered = false) {
    auto st = storage::Store::Open(dir_.string());
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    store_ = std::move(st).value();
    service::KeyspaceOptions o;
    o.region = name_;
    o.has_peers = true;
    o.sweep_interval = std::chrono::milliseconds(20);
    auto svc = service::Keyspace::Open(store_.get(), o, &metrics_);
    ASSERT_TRUE(svc.ok()) << svc.status().ToString();
    svc_ = std::move(svc).value();
    svc_->StartLoading();
    ReplicatorOptions r;
    r.region = name_;
    r.cluster_secret = secret;
    r.listen = {"127.0.0.1", port};
    r.peers = std::move(peers);
    r.peers_discovered = discovered;
    r.interval = std::chrono::milliseconds(20);
    r.handshake_timeout = std::chrono::milliseconds(1000);
    r.connect_timeout = connect_timeout;
    rep_ = std::make_unique<Replicator>(r, svc_.get(), &metrics_);
    if (calls) rep_->SetCallHandler(std::move(calls));
    Status s = rep_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  void Close() {
    if (rep_) rep_->Stop();
    rep_.reset();
    svc_.reset();
    store_.reset();
  }

  int64_t Increment(const std::string& counter, int64_t delta) {
    std::promise<StatusOr<service::CounterValue>> p;
    svc_->Increment(counter, delta,
                    [&](StatusOr<service::CounterValue> r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->value : 0;
  }

  int64_t Value(const std::string& counter) const { return svc_->Read(counter)->value; }
  service::Keyspace& keyspace() { return *svc_; }
  // Whether the key's record (live or a tombstone) is stored here.
  bool HasRecord(const std::string& key) const {
    auto r = svc_->GetRegister(storage::RecordType::kKey, key);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() && r->has_value();
  }
  Replicator& replicator() { return *rep_; }
  nlohmann::json Cluster() const { return nlohmann::json::parse(rep_->ClusterJson()); }
  std::string Metrics() const { return metrics_.Render(); }
  const std::string& name() const { return name_; }

  std::chrono::milliseconds connect_timeout{3000};  // Read by Open.

 private:
  std::string name_;
  std::filesystem::path dir_;
  MetricsRegistry metrics_;
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<service::Keyspace> svc_;
  std::unique_ptr<Replicator> rep_;
};

// Keeps what the default logger writes while it lives. Made before any thread that logs starts
// and destroyed after they are joined: the logger's list of sinks is not safe to change while
// another thread logs.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(4096)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  bool Contains(std::string_view text) const { return Count({text}) > 0; }
  // The lines kept (the last 4096) that contain every one of `texts`.
  int Count(std::initializer_list<std::string_view> texts) const {
    int n = 0;
    for (const std::string& line : sink_->last_formatted()) {
      n += std::all_of(texts.begin(), texts.end(),
                       [&](std::string_view t) { return line.find(t) != std::string::npos; });
    }
    return n;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
};

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

class ReplicatorTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = FreshTestDir(); }
  void TearDown() override {
    a_.reset();
    b_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Two regions, "iad" and "lhr", each with its own secret.
  void StartPair(const std::string& secret_a = "s3cret", const std::string& secret_b = "s3cret",
                 strong::Transport::Handler calls_b = nullptr) {
    port_a_ = net::FindFreePortRange(2);
    ASSERT_NE(port_a_, 0);
    port_b_ = port_a_ + 1;
    a_ = std::make_unique<Region>("iad", dir_);
    b_ = std::make_unique<Region>("lhr", dir_);
    a_->Open(port_a_, {{"lhr", {"127.0.0.1", port_b_}}}, secret_a);
    b_->Open(port_b_, {{"iad", {"127.0.0.1", port_a_}}}, secret_b, std::move(calls_b));
  }

  std::filesystem::path dir_;
  uint16_t port_a_ = 0, port_b_ = 0;
  std::unique_ptr<Region> a_, b_;
};

TEST(ReplicatorReloadTlsTest, TakesOnlyCertificateFilesAndKeepsTheCurrentOnesOnAnError) {
  const std::filesystem::path dir = FreshTestDir();
  MakeSelfSignedCertificate(dir, "node", "node");
  auto store = storage::Store::Open((dir / "data").string());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  MetricsRegistry metrics;
  service::KeyspaceOptions o;
  o.region = "iad";
  auto ks = service::Keyspace::Open(store->get(), o, &metrics);
  ASSERT_TRUE(ks.ok()) << ks.status().ToString();
  ReplicatorOptions r;
  r.region = "iad";
  r.cluster_secret = "reload-test-secret";
  r.listen = {"127.0.0.1", 0};
  {
    MetricsRegistry m;
    Replicator psk(r, ks->get(), &m);
    EXPECT_EQ(psk.ReloadTls().code(), StatusCode::kFailedPrecondition);   // Nothing to read.
    EXPECT_EQ(psk.SetPeers({}).code(), StatusCode::kFailedPrecondition);  // Not started.
  }
  r.tls.mode = PeerTlsOptions::Mode::kCertificates;
  r.tls.cert_file = (dir / "node.pem").string();
  r.tls.key_file = (dir / "node.key").string();
  r.tls.ca_file = (dir / "node.pem").string();
  MetricsRegistry m;
  Replicator certs(r, ks->get(), &m);
  EXPECT_TRUE(certs.ReloadTls().ok());
  std::filesystem::remove(dir / "node.key");
  Status broken = certs.ReloadTls();
  EXPECT_EQ(broken.code(), StatusCode::kInvalidArgument) << broken.ToString();
  EXPECT_NE(broken.message().find("node.key"), std::string::npos) << broken.ToString();
  certs.Stop();
  (*ks)->Stop();
  std::filesystem::remove_all(dir);
}

TEST_F(ReplicatorTest, ConcurrentIncrementsConvergeAndReadsGetABound) {
  StartPair();
  EXPECT_FALSE(a_->replicator().StalenessMs().has_value());  // Nobody heard from yet.
  for (int i = 0; i < 50; ++i) {
    a_->Increment("x", 2);
    b_->Increment("x", 3);
  }
  ASSERT_TRUE(WaitFor([&] { return a_->Value("x") == 250 && b_->Value("x") == 250; },
                      std::chrono::seconds(30)))
      << a_->Value("x") << " " << b_->Value("x");
  ASSERT_TRUE(WaitFor([&] { return b_->replicator().StalenessMs().has_value(); },
                      std::chrono::seconds(30)));
  // Finite and of the order of the interval plus a round trip (20 ms and well under 1 ms here);
  // ten seconds is a bound only a broken computation crosses on a busy machine.
  EXPECT_LT(*b_->replicator().StalenessMs(), 10000);
  nlohmann::json peer = b_->Cluster()["peers"][0];
  EXPECT_EQ(peer["region"], "iad");
  EXPECT_EQ(peer["inbound"], "connected");
}

// A strong delete whose proposer ("syd") vanished after it was chosen, stored by the voter
// "iad" for it: it has no sequence of its origin, so it travels in iad's stream, and both
// regions collect it once iad's stream is applied everywhere (docs/storage.md).
TEST_F(ReplicatorTest, ATombstoneStoredForAVanishedProposerIsCollectedEverywhere) {
  StartPair();
  crdt::LwwRegister chosen;
  chosen.hlc = a_->keyspace().ClockNow();
  chosen.origin = "syd";
  chosen.deleted = true;
  std::promise<StatusOr<service::RegisterResult>> stored;
  a_->keyspace().ApplyChosenRegister(
      "gone", chosen, [&](StatusOr<service::RegisterResult> r) { stored.set_value(std::move(r)); });
  ASSERT_TRUE(stored.get_future().get().ok());
  // b has it (a tombstone is a record) before either collects it: it did travel.
  ASSERT_TRUE(WaitFor([&] { return b_->HasRecord("gone") || !a_->HasRecord("gone"); },
                      std::chrono::seconds(30)));
  EXPECT_TRUE(b_->HasRecord("gone") || b_->keyspace().sweep_stats().collected > 0);
  ASSERT_TRUE(WaitFor([&] { return !a_->HasRecord("gone") && !b_->HasRecord("gone"); },
                      std::chrono::seconds(30)))
      << a_->HasRecord("gone") << " " << b_->HasRecord("gone");
  EXPECT_EQ(a_->keyspace().sweep_stats().collected, 1u);
  EXPECT_EQ(b_->keyspace().sweep_stats().collected, 1u);
}

// Waits until the outbound link of `r` (one peer) was retried twice, then checks that its last
// attempt failed with `error` (the deadline, not a failed authentication) and that no attempt
// counted as a refused peer.
void ExpectRetriedAfter(const Region& r, const std::string& error) {
  ASSERT_TRUE(WaitFor([&] { return r.Cluster()["peers"][0]["reconnects"].get<int64_t>() >= 2; },
                      std::chrono::seconds(60)))
      << r.Cluster().dump();
  EXPECT_NE(r.Cluster()["peers"][0]["last_error"].get<std::string>().find(error), std::string::npos)
      << r.Cluster().dump();
  EXPECT_NE(r.Metrics().find("edgestate_replication_refused_peers_total 0\n"), std::string::npos)
      << r.Metrics();
}

// A peer address where connections are taken and never answered (a stopped process, another
// service): every outbound attempt ends at the handshake deadline (1 s here) and is retried, and
// Stop ends one in progress instead of waiting for its loop's shutdown grace.
TEST_F(ReplicatorTest, AnOutboundHandshakeNobodyAnswersEndsAtItsDeadline) {
  LogCapture log;
  asio::io_context ioc;
  tcp::acceptor silent(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const uint16_t port_a = net::FindFreePortRange(1);
  ASSERT_NE(port_a, 0);
  a_ = std::make_unique<Region>("iad", dir_);
  a_->Open(port_a, {{"lhr", {"127.0.0.1", silent.local_endpoint().port()}}}, "s3cret");
  ExpectRetriedAfter(
      *a_, "TLS handshake with 127.0.0.1:" + std::to_string(silent.local_endpoint().port()) +
               ": no answer within 1000 ms");
  ASSERT_TRUE(WaitFor([&] { return a_->Cluster()["peers"][0]["outbound"] == "handshaking"; },
                      std::chrono::seconds(30)));
  // Only an operation that nothing ends holds the loop until its grace (net::StopLoop says so).
  a_->Close();
  EXPECT_FALSE(log.Contains("still had work"));
}

// A peer whose accept queue is full drops new connections' SYNs: a connect to it on loopback
// never completes, as one to an address that blackholes packets.
TEST_F(ReplicatorTest, AnOutboundConnectNobodyCompletesEndsAtItsDeadline) {
  LogCapture log;
  asio::io_context ioc;
  tcp::acceptor full(ioc);
  full.open(tcp::v4());
  full.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  full.listen(0);
  tcp::socket filler(ioc);  // Queued, never accepted: the queue (of one) is full.
  filler.connect(full.local_endpoint());
  const uint16_t port_a = net::FindFreePortRange(1);
  ASSERT_NE(port_a, 0);
  a_ = std::make_unique<Region>("iad", dir_);
  a_->connect_timeout = std::chrono::milliseconds(300);
  a_->Open(port_a, {{"lhr", {"127.0.0.1", full.local_endpoint().port()}}}, "s3cret");
  ExpectRetriedAfter(*a_, "connect 127.0.0.1:" + std::to_string(full.local_endpoint().port()) +
                              ": no answer within 300 ms");
  // Stop, whether an attempt is in flight or the link waits to retry, never waits for the
  // loop's grace.
  a_->Close();
  EXPECT_FALSE(log.Contains("still had work"));
}

TEST_F(ReplicatorTest, PeersSetAtRunTimeJoinLeaveAndComeBack) {
  const uint16_t base = net::FindFreePortRange(3);
  ASSERT_NE(base, 0);
  auto at = [&](const char* region, int i) {
    return PeerAddress{region, {"127.0.0.1", static_cast<uint16_t>(base + i)}};
  };
  a_ = std::make_unique<Region>("iad", dir_);
  b_ = std::make_unique<Region>("lhr", dir_);
  Region c("fra", dir_);
  a_->Open(base, {}, "s3cret", nullptr, /*discovered=*/true);
  b_->Open(base + 1, {}, "s3cret", nullptr, true);
  c.Open(base + 2, {}, "s3cret", nullptr, true);
  // Peers not known yet: no bound at all, not "fresh".
  EXPECT_FALSE(a_->replicator().StalenessMs().has_value());
  EXPECT_FALSE(a_->replicator().StalenessFloorMs().has_value());

  ASSERT_TRUE(a_->replicator().SetPeers({at("lhr", 1), at("iad", 0)}).ok());  // Self: ignored.
  ASSERT_TRUE(b_->replicator().SetPeers({at("iad", 0)}).ok());
  a_->Increment("x", 2);
  b_->Increment("x", 3);
  ASSERT_TRUE(WaitFor([&] { return a_->Value("x") == 5 && b_->Value("x") == 5; },
                      std::chrono::seconds(30)));
  ASSERT_TRUE(WaitFor([&] { return a_->replicator().StalenessMs().has_value(); },
                      std::chrono::seconds(30)));

  // fra joins: everything it missed arrives, and its writes reach both.
  ASSERT_TRUE(c.replicator().SetPeers({at("iad", 0), at("lhr", 1)}).ok());
  ASSERT_TRUE(a_->replicator().SetPeers({at("lhr", 1), at("fra", 2)}).ok());
  ASSERT_TRUE(b_->replicator().SetPeers({at("iad", 0), at("fra", 2)}).ok());
  c.Increment("x", 7);
  ASSERT_TRUE(
      WaitFor([&] { return a_->Value("x") == 12 && b_->Value("x") == 12 && c.Value("x") == 12; },
              std::chrono::seconds(30)))
      << a_->Value("x") << " " << b_->Value("x") << " " << c.Value("x");
  EXPECT_EQ(a_->Cluster()["peers"].size(), 2u);

  // lhr leaves iad's set: its links close, it is no longer listed nor counted in the bound, and
  // lhr's links to iad are refused (iad does not know it any more).
  ASSERT_TRUE(a_->replicator().SetPeers({at("fra", 2)}).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        nlohmann::json peers = a_->Cluster()["peers"];
        return peers.size() == 1 && peers[0]["region"] == "fra";
      },
      std::chrono::seconds(30)));
  ASSERT_TRUE(WaitFor(
      [&] {
        nlohmann::json cluster = b_->Cluster();
        for (const auto& p : cluster["peers"]) {
          if (p["region"] == "iad" && p["outbound"] != "connected") return true;
        }
        return false;
      },
      std::chrono::seconds(30)))
      << b_->Cluster().dump();
  b_->Increment("x", 100);  // Reaches fra; iad does not take it from lhr now.
  ASSERT_TRUE(WaitFor([&] { return c.Value("x") == 112; }, std::chrono::seconds(30)));

  // lhr comes back: anti-entropy brings what iad missed.
  ASSERT_TRUE(a_->replicator().SetPeers({at("fra", 2), at("lhr", 1)}).ok());
  ASSERT_TRUE(WaitFor([&] { return a_->Value("x") == 112; }, std::chrono::seconds(30)))
      << a_->Value("x");

  // Bad sets change nothing.
  EXPECT_EQ(a_->replicator().SetPeers({at("fra", 2), at("fra", 1)}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(a_->replicator().SetPeers({at("Not A Region", 2)}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(a_->replicator().SetPeers({PeerAddress{"syd", {"", 0}}}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(a_->Cluster()["peers"].size(), 2u);
  a_->replicator().Stop();
  EXPECT_EQ(a_->replicator().SetPeers({}).code(), StatusCode::kFailedPrecondition);
}

TEST_F(ReplicatorTest, CatchesUpAfterARestart) {
  StartPair();
  b_->Close();
  for (int i = 0; i < 20; ++i) a_->Increment("y", 1);
  b_->Open(port_b_, {{"iad", {"127.0.0.1", port_a_}}}, "s3cret");
  ASSERT_TRUE(WaitFor([&] { return b_->Value("y") == 20; }, std::chrono::seconds(30)))
      << b_->Value("y");
}

TEST_F(ReplicatorTest, AWrongSecretIsRefusedAndNothingIsApplied) {
  StartPair("s3cret", "other");
  a_->Increment("z", 5);
  b_->Increment("z", 7);
  ASSERT_TRUE(WaitFor(
      [&] {
        return b_->Cluster()["peers"][0]["last_error"].dump().find("secret") != std::string::npos;
      },
      std::chrono::seconds(30)))
      << b_->Cluster().dump();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(a_->Value("z"), 5);
  EXPECT_EQ(b_->Value("z"), 7);
  EXPECT_FALSE(b_->replicator().StalenessMs().has_value());
}

// A raw client on a region's peer port, speaking the wire format by hand inside TLS with the
// key of `tls_secret` (empty: in plaintext, which a region never accepts).
class RawPeer {
 public:
  explicit RawPeer(uint16_t port, const std::string& tls_secret = "s3cret") : socket_(ioc_) {
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    if (tls_secret.empty()) return;
    auto t = PeerTls::Create(PeerTlsOptions{}, tls_secret);
    EXPECT_TRUE(t.ok());
    tls_ctx_ = std::move(t).value();
    tls_.emplace(socket_, *tls_ctx_->client());
    boost::system::error_code ec;
    tls_->handshake(asio::ssl::stream_base::client, ec);
    handshake_failed_ = static_cast<bool>(ec);
  }

  bool handshake_failed() const { return handshake_failed_; }

  void SendBytes(const std::string& bytes) {
    boost::system::error_code ec;
    if (tls_) {
      asio::write(*tls_, asio::buffer(bytes), ec);
    } else {
      asio::write(socket_, asio::buffer(bytes), ec);
    }
  }
  void Send(const pb::Frame& f) {
    std::string body = f.SerializeAsString();
    uint32_t n = static_cast<uint32_t>(body.size());
    std::string frame = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                         static_cast<char>(n >> 8), static_cast<char>(n)};
    SendBytes(frame + body);
  }
  // The next frame, or nullopt when the connection closed.
  std::optional<pb::Frame> Receive() {
    boost::system::error_code ec;
    unsigned char len[4];
    Read(asio::buffer(len), ec);
    if (ec) return std::nullopt;
    std::string body((len[0] << 24) | (len[1] << 16) | (len[2] << 8) | len[3], '\0');
    Read(asio::buffer(body), ec);
    pb::Frame f;
    if (ec || !f.ParseFromString(body)) return std::nullopt;
    return f;
  }
  // True when the other side closed the connection (within the handshake timeout and more).
  bool Closed() {
    char c;
    boost::system::error_code ec;
    Read(asio::buffer(&c, 1), ec);
    return static_cast<bool>(ec);
  }

  // Runs the client side of the handshake as `region`; returns the Welcome, if any.
  std::optional<pb::Frame> Handshake(const std::string& region, const std::string& server_region,
                                     const std::string& secret) {
    std::string nonce = RandomNonce();
    pb::Frame hello;
    hello.mutable_hello()->set_protocol_version(1);
    hello.mutable_hello()->set_region(region);
    hello.mutable_hello()->set_nonce(nonce);
    Send(hello);
    auto challenge = Receive();
    if (!challenge || !challenge->has_challenge()) return std::nullopt;
    pb::Frame auth;
    auth.mutable_auth()->set_proof(
        Proof(secret, kClientRole, nonce, challenge->challenge().nonce(), region, server_region));
    Send(auth);
    return Receive();
  }

 private:
  void Read(asio::mutable_buffer b, boost::system::error_code& ec) {
    if (tls_) {
      asio::read(*tls_, b, ec);
    } else {
      asio::read(socket_, b, ec);
    }
  }

  asio::io_context ioc_;
  tcp::socket socket_;
  std::unique_ptr<PeerTls> tls_ctx_;
  std::optional<asio::ssl::stream<tcp::socket&>> tls_;
  bool handshake_failed_ = false;
};

TEST_F(ReplicatorTest, HostilePeersAreClosedWithoutEffect) {
  LogCapture log;
  StartPair();
  a_->Increment("h", 1);
  ASSERT_TRUE(WaitFor([&] { return b_->Value("h") == 1; }, std::chrono::seconds(30)));

  {  // A plaintext client (even with a well-formed hello) never gets a frame through.
    RawPeer p(port_b_, /*tls_secret=*/"");
    pb::Frame hello;
    hello.mutable_hello()->set_protocol_version(1);
    hello.mutable_hello()->set_region("iad");
    hello.mutable_hello()->set_nonce(RandomNonce());
    p.Send(hello);
    EXPECT_TRUE(p.Closed());
  }
  {  // TLS with a key from another secret: the handshake fails, nothing is read.
    RawPeer p(port_b_, "not-the-secret");
    EXPECT_TRUE(p.handshake_failed());
    EXPECT_TRUE(p.Closed());
  }
  {  // Random bytes inside the TLS channel.
    RawPeer p(port_b_);
    EXPECT_FALSE(p.handshake_failed());
    std::mt19937 rng(1);
    std::string junk(5000, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    p.SendBytes(junk);
    EXPECT_TRUE(p.Closed());
  }
  {  // A length prefix of 4 GiB.
    RawPeer p(port_b_);
    p.SendBytes(std::string("\xff\xff\xff\xff", 4));
    EXPECT_TRUE(p.Closed());
  }
  {  // A hello from a region that is not a peer.
    RawPeer p(port_b_);
    EXPECT_FALSE(p.Handshake("syd", "lhr", "s3cret").has_value());
  }
  {  // A hello claiming to be iad without the secret.
    RawPeer p(port_b_);
    auto w = p.Handshake("iad", "lhr", "guess");
    EXPECT_FALSE(w.has_value() && w->has_welcome());
  }
  // Silent clients are closed by the handshake deadline (1 s here), which the refusal names
  // (logged just after the close).
  const std::string_view deadline = "no answer within 1000 ms";
  {  // A TCP client that never starts TLS.
    RawPeer p(port_b_, /*tls_secret=*/"");
    EXPECT_TRUE(p.Closed());
    EXPECT_TRUE(WaitFor(
        [&] {
          return log.Count({"refused", deadline}) == 1;
        },
        std::chrono::seconds(30)));
    EXPECT_EQ(log.Count({"refused", "TLS handshake with", deadline}), 1);
  }
  {  // A TLS client that never sends its hello.
    RawPeer p(port_b_);
    EXPECT_TRUE(p.Closed());
    EXPECT_TRUE(WaitFor(
        [&] {
          return log.Count({"refused", deadline}) == 2;
        },
        std::chrono::seconds(30)));
    EXPECT_EQ(log.Count({"refused", "read from", deadline}), 1);
  }
  {  // An authenticated peer sending a slot with a name the API would refuse: the whole delta
     // is refused and the link closed.
    RawPeer p(port_b_);
    auto w = p.Handshake("iad", "lhr", "s3cret");
    ASSERT_TRUE(w.has_value() && w->has_welcome());
    EXPECT_TRUE(w->welcome().accepts_pull());  // Clients may send it Pull frames.
    pb::Frame d;
    d.mutable_delta()->set_covers_seq(w->welcome().applied_seq() + 100);
    auto* ok = d.mutable_delta()->add_slots();
    ok->set_name("fine");
    ok->set_inc(1000);
    ok->set_version(w->welcome().applied_seq() + 100);
    auto* bad = d.mutable_delta()->add_slots();
    bad->set_name(std::string("bad\nname"));
    bad->set_inc(1);
    bad->set_version(w->welcome().applied_seq() + 100);
    p.Send(d);
    EXPECT_TRUE(p.Closed());
    EXPECT_EQ(b_->Value("fine"), 0);
    EXPECT_EQ(b_->Value("bad\nname"), 0);
  }
  {  // A peer that vanishes in the middle of a frame.
    RawPeer p(port_b_);
    p.SendBytes(std::string("\0\0\0\x64", 4) + "0123456789");
  }
  {  // An authenticated peer that vanishes in the middle of a delta.
    RawPeer p(port_b_);
    auto w = p.Handshake("iad", "lhr", "s3cret");
    ASSERT_TRUE(w.has_value() && w->has_welcome());
    pb::Frame d;
    auto* slot = d.mutable_delta()->add_slots();
    slot->set_name("cut");
    slot->set_inc(5);
    std::string body = d.SerializeAsString();
    uint32_t n = static_cast<uint32_t>(body.size());
    p.SendBytes(std::string{static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                            static_cast<char>(n >> 8), static_cast<char>(n)} +
                body.substr(0, body.size() / 2));
  }
  EXPECT_EQ(b_->Value("cut"), 0);
  // The real link still works (it may have been displaced by the authenticated raw peer and
  // reconnects on its own).
  a_->Increment("h", 1);
  ASSERT_TRUE(WaitFor([&] { return b_->Value("h") == 2; }, std::chrono::seconds(30)))
      << b_->Value("h");
}

// The result of one Transport::Call.
struct CallResult {
  StatusOr<std::string> reply;
  bool sent;
};

CallResult CallAndWait(Replicator& r, const std::string& region, const std::string& payload) {
  auto p = std::make_shared<std::promise<CallResult>>();
  auto f = p->get_future();
  r.Call(region, payload, [p](StatusOr<std::string> reply, bool sent) {
    p->set_value({std::move(reply), sent});
  });
  EXPECT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  return f.get();
}

TEST_F(ReplicatorTest, CallsTravelOnTheLinksAndFailWhenTheLinkGoes) {
  // lhr answers calls with "CALLER:PAYLOAD" and never answers "hold"; iad takes no calls.
  std::mutex mu;
  std::vector<strong::Transport::Reply> held;  // GUARDED_BY(mu)
  StartPair("s3cret", "s3cret",
            [&](const std::string& from, std::string payload, strong::Transport::Reply reply) {
              if (payload == "hold") {
                std::lock_guard lock(mu);
                held.push_back(std::move(reply));
                return;
              }
              reply(from + ":" + payload);
            });
  ASSERT_TRUE(WaitFor([&] { return a_->replicator().LinkRttUs("lhr").has_value(); },
                      std::chrono::seconds(30)));
  CallResult ok = CallAndWait(a_->replicator(), "lhr", "ping");
  ASSERT_TRUE(ok.reply.ok()) << ok.reply.status().ToString();
  EXPECT_EQ(*ok.reply, "iad:ping");

  // Nowhere to send it: refused at once, and said never to have left.
  CallResult unknown = CallAndWait(a_->replicator(), "syd", "ping");
  EXPECT_FALSE(unknown.reply.ok());
  EXPECT_FALSE(unknown.sent);
  ASSERT_TRUE(WaitFor([&] { return b_->Cluster()["peers"][0]["outbound"] == "connected"; },
                      std::chrono::seconds(30)));
  EXPECT_FALSE(b_->replicator().LinkRttUs("iad").has_value());  // iad takes no calls.
  CallResult refused = CallAndWait(b_->replicator(), "iad", "ping");
  EXPECT_FALSE(refused.reply.ok());
  EXPECT_FALSE(refused.sent);

  {  // A peer sending a call to a region that takes none is closed.
    RawPeer p(port_a_);
    auto w = p.Handshake("lhr", "iad", "s3cret");
    ASSERT_TRUE(w.has_value() && w->has_welcome());
    EXPECT_FALSE(w->welcome().accepts_calls());
    pb::Frame call;
    call.mutable_call()->set_id(1);
    call.mutable_call()->set_payload("ping");
    p.Send(call);
    EXPECT_TRUE(p.Closed());
  }
  {  // A raw authenticated peer's call is answered on its own connection, by id.
    RawPeer p(port_b_);
    auto w = p.Handshake("iad", "lhr", "s3cret");
    ASSERT_TRUE(w.has_value() && w->has_welcome());
    EXPECT_TRUE(w->welcome().accepts_calls());
    pb::Frame call;
    call.mutable_call()->set_id(7);
    call.mutable_call()->set_payload("raw");
    p.Send(call);
    auto reply = p.Receive();
    ASSERT_TRUE(reply.has_value() && reply->has_call_reply());
    EXPECT_EQ(reply->call_reply().id(), 7u);
    EXPECT_EQ(reply->call_reply().payload(), "iad:raw");
  }

  // The raw peer displaced iad's real link to lhr, which reconnects; once a call goes through
  // again, a call in flight when the peer goes away fails, and may have reached it (sent).
  ASSERT_TRUE(WaitFor([&] { return CallAndWait(a_->replicator(), "lhr", "ping").reply.ok(); },
                      std::chrono::seconds(30)));
  auto p = std::make_shared<std::promise<CallResult>>();
  auto f = p->get_future();
  a_->replicator().Call("lhr", "hold", [p](StatusOr<std::string> reply, bool sent) {
    p->set_value({std::move(reply), sent});
  });
  ASSERT_TRUE(WaitFor(
      [&] {
        std::lock_guard lock(mu);
        return !held.empty();
      },
      std::chrono::seconds(30)));
  b_->Close();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  CallResult gone = f.get();
  EXPECT_FALSE(gone.reply.ok());
  EXPECT_EQ(gone.reply.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(gone.sent);
}

}  // namespace
}  // namespace edgestate::replication
