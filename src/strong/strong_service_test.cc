#include "strong/strong_service.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <random>
#include <set>
#include <thread>

#include "common/test_dir.h"
#include "lincheck/lincheck.h"
#include "strong/caspaxos.h"

namespace edgestate::strong {
namespace {

using SteadyClock = std::chrono::steady_clock;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now().time_since_epoch())
      .count();
}

// An in-process network between regions: every message is delivered after a random delay by
// one thread, may be lost (the caller then learns the link closed, as with a real link), and
// partitioned pairs refuse calls at once. Deterministic delays and losses per seed; the
// interleaving with the nodes' threads is not.
class FakeNet {
 public:
  explicit FakeNet(uint64_t seed) : rng_(seed), thread_([this] { Run(); }) {}
  ~FakeNet() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  class Endpoint : public Transport {
   public:
    Endpoint(FakeNet* net, std::string region) : net_(net), region_(std::move(region)) {}
    void Call(const std::string& to, std::string payload, ReplyCallback done) override {
      net_->Send(region_, to, std::move(payload), std::move(done));
    }
    void SetCallHandler(Handler h) override {
      std::lock_guard lock(net_->mu_);
      net_->handlers_[region_] = std::move(h);
    }
    std::optional<int64_t> LinkRttUs(const std::string& to) const override {
      if (!net_->Connected(region_, to)) return std::nullopt;
      return 1000 + static_cast<int64_t>(std::hash<std::string>{}(to) % 1000);
    }

   private:
    FakeNet* net_;
    std::string region_;
  };

  void SetLoss(double p) {
    std::lock_guard lock(mu_);
    loss_ = p;
  }
  void SetMaxDelayUs(int64_t us) {
    std::lock_guard lock(mu_);
    max_delay_us_ = us;
  }
  // Cuts (or heals) every link of `region`.
  void Isolate(const std::string& region, bool cut) {
    std::lock_guard lock(mu_);
    if (cut) {
      isolated_.insert(region);
    } else {
      isolated_.erase(region);
    }
  }
  void RemoveHandler(const std::string& region) {
    std::lock_guard lock(mu_);
    handlers_.erase(region);
  }
  // Waits until every message in flight has been delivered or lost.
  void Drain() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return queue_.empty() && running_ == 0; });
  }

 private:
  struct Event {
    SteadyClock::time_point at;
    uint64_t seq;
    std::function<void()> fn;
    bool operator>(const Event& o) const { return std::tie(at, seq) > std::tie(o.at, o.seq); }
  };

  bool Connected(const std::string& a, const std::string& b) {
    std::lock_guard lock(mu_);
    return !isolated_.count(a) && !isolated_.count(b) && handlers_.count(b);
  }

  // REQUIRES: mu_ held.
  void Schedule(std::function<void()> fn) {
    std::uniform_int_distribution<int64_t> delay(0, max_delay_us_);
    queue_.push(Event{SteadyClock::now() + std::chrono::microseconds(delay(rng_)), next_seq_++,
                      std::move(fn)});
    cv_.notify_all();
  }
  bool Lose() {  // REQUIRES: mu_ held.
    return std::uniform_real_distribution<double>(0, 1)(rng_) < loss_;
  }

  void Send(const std::string& from, const std::string& to, std::string payload,
            Transport::ReplyCallback done) {
    std::unique_lock lock(mu_);
    if (isolated_.count(from) || isolated_.count(to) || !handlers_.count(to)) {
      lock.unlock();
      return done(Status::Unavailable("no link"), false);
    }
    auto shared_done = std::make_shared<Transport::ReplyCallback>(std::move(done));
    if (Lose()) {
      Schedule([shared_done] { (*shared_done)(Status::Unavailable("link closed"), true); });
      return;
    }
    Schedule([this, from, to, payload = std::move(payload), shared_done]() mutable {
      Transport::Handler h;
      {
        std::lock_guard lock(mu_);
        auto it = handlers_.find(to);
        if (it == handlers_.end() || isolated_.count(to) || isolated_.count(from)) {
          Schedule([shared_done] { (*shared_done)(Status::Unavailable("link closed"), true); });
          return;
        }
        h = it->second;
      }
      h(from, std::move(payload), [this, from, to, shared_done](std::string reply) {
        std::lock_guard lock(mu_);
        if (Lose() || isolated_.count(to) || isolated_.count(from)) {
          Schedule([shared_done] { (*shared_done)(Status::Unavailable("link closed"), true); });
          return;
        }
        Schedule([shared_done, reply = std::move(reply)]() mutable {
          (*shared_done)(std::move(reply), true);
        });
      });
    });
  }

  void Run() {
    std::unique_lock lock(mu_);
    while (true) {
      if (done_ && queue_.empty()) return;
      if (queue_.empty()) {
        cv_.wait(lock);
        continue;
      }
      if (const SteadyClock::time_point next = queue_.top().at; SteadyClock::now() < next) {
        cv_.wait_until(lock, next);  // A copy: the queue may grow (and move) meanwhile.
        continue;
      }
      Event e = queue_.top();
      queue_.pop();
      ++running_;
      lock.unlock();
      e.fn();
      lock.lock();
      --running_;
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::mt19937_64 rng_;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> queue_;
  std::map<std::string, Transport::Handler> handlers_;
  std::set<std::string> isolated_;
  double loss_ = 0;
  int64_t max_delay_us_ = 300;
  uint64_t next_seq_ = 0;
  int running_ = 0;
  bool done_ = false;
  std::thread thread_;
};

struct Node {
  std::string region;
  std::filesystem::path dir;
  std::unique_ptr<MetricsRegistry> metrics;
  std::unique_ptr<storage::Store> store;
  std::unique_ptr<service::Keyspace> counters;
  std::unique_ptr<FakeNet::Endpoint> endpoint;
  std::unique_ptr<StrongService> strong;
};

class StrongServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { root_ = FreshTestDir(); }
  void TearDown() override {
    for (auto& [r, n] : nodes_) Close(n);
    net_.reset();
    std::filesystem::remove_all(root_);
  }

  void Start(uint64_t seed, std::vector<std::string> regions, std::vector<std::string> voters,
             std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) {
    net_ = std::make_unique<FakeNet>(seed);
    voters_ = std::move(voters);
    timeout_ = timeout;
    for (const auto& r : regions) {
      Node& n = nodes_[r];
      n.region = r;
      n.dir = root_ / r;
      Open(n);
    }
  }

  void Open(Node& n) {
    n.metrics = std::make_unique<MetricsRegistry>();
    auto store = storage::Store::Open(n.dir.string());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    n.store = std::move(store).value();
    service::KeyspaceOptions co;
    co.region = n.region;
    auto counters = service::Keyspace::Open(n.store.get(), co, n.metrics.get());
    ASSERT_TRUE(counters.ok());
    n.counters = std::move(counters).value();
    n.counters->StartLoading();
    n.endpoint = std::make_unique<FakeNet::Endpoint>(net_.get(), n.region);
    StrongOptions so;
    so.region = n.region;
    so.voters = voters_;
    so.timeout = timeout_;
    so.fault_local_reads = fault_local_reads_;
    auto strong =
        StrongService::Open(so, n.store.get(), n.counters.get(), n.endpoint.get(), n.metrics.get());
    ASSERT_TRUE(strong.ok()) << strong.status().ToString();
    n.strong = std::move(strong).value();
  }

  // As a crash: the node stops answering, then its services close (kill -9 loses only what
  // was not synced, and the acceptor answers only what is synced).
  void Close(Node& n) {
    if (!n.strong) return;
    net_->RemoveHandler(n.region);
    n.strong->Stop();
    n.counters->Stop();
    n.strong.reset();
    n.counters.reset();
    n.store.reset();
    n.endpoint.reset();
  }

  StatusOr<StrongResult> Run(const std::string& region, const std::string& key, bool read,
                             int64_t delta = 1) {
    std::promise<StatusOr<StrongResult>> p;
    nodes_[region].strong->Submit(key, read, delta,
                                  [&p](StatusOr<StrongResult> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  }

  StatusOr<StrongResult> RunKey(const std::string& region, const std::string& key, bool read,
                                service::RegisterWrite write = {}) {
    std::promise<StatusOr<StrongResult>> p;
    nodes_[region].strong->SubmitKey(key, read, std::move(write),
                                     [&p](StatusOr<StrongResult> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  }

  // Read-modify-write loops on key "acct" (a decimal number) from `clients` threads per region,
  // each write conditional on the ETag it read. Returns the values the acknowledged writes
  // replaced and the number of writes whose outcome is unknown, and records the history in
  // history_["acct"] as a counter's: a read returns the number, an acknowledged write is an
  // increment returning the number it wrote, an unknown one an indeterminate increment (writes
  // refused with 412 change nothing and are left out).
  std::pair<std::vector<int64_t>, size_t> CasLoad(
      int clients, int writes_per_client,
      std::chrono::milliseconds max_time = std::chrono::seconds(30)) {
    std::vector<std::thread> threads;
    std::mutex mu;
    std::vector<int64_t> replaced;
    size_t unknown = 0;
    for (auto& [region, node] : nodes_) {
      for (int i = 0; i < clients; ++i) {
        threads.emplace_back([&, region = region] {
          const auto deadline = SteadyClock::now() + max_time;
          for (int done = 0; done < writes_per_client && SteadyClock::now() < deadline;) {
            lincheck::Op read;
            read.read = true;
            read.invoke_ns = NowNs();
            StatusOr<StrongResult> got = RunKey(region, "acct", true);
            read.response_ns = NowNs();
            if (!got.ok()) {
              EXPECT_EQ(got.status().code(), StatusCode::kUnavailable) << got.status().ToString();
              continue;
            }
            const int64_t n = std::stoll(got->reg->value);
            service::RegisterWrite w;
            w.value = std::to_string(n + 1);
            w.if_match = service::ETagOf(*got->reg);
            lincheck::Op write;
            write.delta = 1;
            write.invoke_ns = NowNs();
            StatusOr<StrongResult> put = RunKey(region, "acct", false, std::move(w));
            write.response_ns = NowNs();
            std::lock_guard lock(mu);
            std::vector<lincheck::Op>& h = history_["acct"];
            read.has_value = true;
            read.value = n;
            read.id = h.size();
            h.push_back(read);
            if (put.ok()) {
              replaced.push_back(n);
              ++done;
              write.has_value = true;
              write.value = n + 1;
              write.id = h.size();
              h.push_back(write);
            } else if (put.status().code() == StatusCode::kUnavailable) {
              ++unknown;  // It may have been chosen.
              write.response_ns = lincheck::kNever;
              write.id = h.size();
              h.push_back(write);
              break;  // A client that cannot know the outcome stops, as the checker assumes.
            } else {
              EXPECT_EQ(put.status().code(), StatusCode::kFailedPrecondition)
                  << put.status().ToString();
            }
          }
        });
      }
    }
    for (auto& t : threads) t.join();
    return {replaced, unknown};
  }

  // Runs `per_client` operations from each of `clients` threads per region, on `keys` keys,
  // and records the history of every key.
  struct Tally {
    uint64_t ok = 0, failed = 0;
  };
  Tally Load(int clients, int per_client, int keys, double read_share, uint64_t seed) {
    std::vector<std::thread> threads;
    std::mutex mu;
    Tally tally;
    int c = 0;
    for (auto& [region, node] : nodes_) {
      for (int i = 0; i < clients; ++i, ++c) {
        threads.emplace_back([&, region = region, c] {
          std::mt19937_64 rng(seed * 1000 + static_cast<uint64_t>(c));
          std::uniform_real_distribution<double> u(0, 1);
          std::uniform_int_distribution<int> k(0, keys - 1);
          for (int j = 0; j < per_client; ++j) {
            std::string key = "k" + std::to_string(k(rng));
            bool read = u(rng) < read_share;
            lincheck::Op op;
            op.read = read;
            op.delta = 1;
            op.invoke_ns = NowNs();
            StatusOr<StrongResult> r = Run(region, key, read);
            op.response_ns = NowNs();
            std::lock_guard lock(mu);
            op.id = history_[key].size();
            if (r.ok()) {
              ++tally.ok;
              op.has_value = true;
              op.value = r->value;
              history_[key].push_back(op);
            } else {
              ++tally.failed;
              EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
              if (!read) {  // Indeterminate: it may have been chosen.
                op.response_ns = lincheck::kNever;
                history_[key].push_back(op);
                break;  // A client that cannot know the outcome stops, as the checker assumes.
              }
            }
          }
        });
      }
    }
    for (auto& t : threads) t.join();
    return tally;
  }

  void ExpectLinearizable() {
    for (const auto& [key, ops] : history_) {
      lincheck::Result r = lincheck::Check(ops, 0);
      EXPECT_EQ(r.verdict, lincheck::Verdict::kOk)
          << key << " (" << ops.size() << " ops): " << r.explanation;
    }
  }

  std::filesystem::path root_;
  std::unique_ptr<FakeNet> net_;
  std::vector<std::string> voters_;
  std::chrono::milliseconds timeout_{2000};
  bool fault_local_reads_ = false;
  std::map<std::string, Node> nodes_;
  std::map<std::string, std::vector<lincheck::Op>> history_;
};

TEST(ValidateVotersTest, Rules) {
  std::vector<std::string> peers = {"b", "c", "d", "e"};
  EXPECT_TRUE(ValidateVoters({}, "a", peers).ok());
  EXPECT_TRUE(ValidateVoters({"a", "b", "c"}, "a", peers).ok());
  EXPECT_TRUE(ValidateVoters({"b", "c", "d"}, "a", peers).ok());  // A non-voter.
  EXPECT_TRUE(ValidateVoters({"a", "b", "c", "d", "e"}, "a", peers).ok());
  EXPECT_FALSE(ValidateVoters({"a", "b"}, "a", peers).ok());
  EXPECT_FALSE(ValidateVoters({"a", "b", "c", "d"}, "a", peers).ok());
  EXPECT_FALSE(ValidateVoters({"a", "b", "b"}, "a", peers).ok());
  EXPECT_FALSE(ValidateVoters({"a", "b", "x"}, "a", peers).ok());
}

TEST_F(StrongServiceTest, WithoutVotersStrongIsRefused) {
  Start(1, {"a"}, {});
  StatusOr<StrongResult> r = Run("a", "k", false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("--strong-voters"), std::string::npos);
}

TEST_F(StrongServiceTest, IncrementsReturnExactValuesEverywhere) {
  Start(2, {"a", "b", "c", "d"}, {"a", "b", "c"});
  int64_t expect = 0;
  for (const std::string r : {"a", "d", "b", "c", "d"}) {
    StatusOr<StrongResult> v = Run(r, "k", false, 3);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    expect += 3;
    EXPECT_EQ(v->value, expect) << "at " << r;
  }
  // The forwarder's read is linearizable too, and the value reached every replica's counter.
  StatusOr<StrongResult> read = Run("d", "k", true);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->value, expect);
  EXPECT_EQ(nodes_["a"].counters->Read("k")->value + nodes_["b"].counters->Read("k")->value +
                    nodes_["c"].counters->Read("k")->value >=
                expect,
            true);
}

TEST_F(StrongServiceTest, ConcurrentOperationsAreLinearizable) {
  Start(3, {"a", "b", "c", "d"}, {"a", "b", "c"});
  Tally t = Load(/*clients=*/4, /*per_client=*/60, /*keys=*/2, /*read_share=*/0.3, 3);
  EXPECT_EQ(t.failed, 0u);
  ExpectLinearizable();
  // Concurrent operations shared rounds.
  std::string json = nodes_["a"].strong->StatusJson();
  EXPECT_NE(json.find("\"role\":\"voter\""), std::string::npos) << json;
}

TEST_F(StrongServiceTest, LossyNetworkNeverBreaksLinearizability) {
  for (uint64_t seed = 10; seed < 14; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    for (auto& [r, n] : nodes_) Close(n);
    nodes_.clear();
    history_.clear();
    net_.reset();
    std::filesystem::remove_all(root_);
    Start(seed, {"a", "b", "c", "d"}, {"a", "b", "c"}, std::chrono::milliseconds(400));
    net_->SetLoss(0.05);
    net_->SetMaxDelayUs(2000);
    Tally t = Load(3, 40, 1, 0.3, seed);
    EXPECT_GT(t.ok, 0u);
    ExpectLinearizable();
  }
}

TEST_F(StrongServiceTest, OneVoterDownContinuesTwoDownFailsInTime) {
  Start(4, {"a", "b", "c", "d"}, {"a", "b", "c"}, std::chrono::milliseconds(300));
  ASSERT_TRUE(Run("a", "k", false).ok());
  net_->Isolate("c", true);
  for (const std::string r : {"a", "b", "d"}) {
    StatusOr<StrongResult> v = Run(r, "k", false);
    ASSERT_TRUE(v.ok()) << r << ": " << v.status().ToString();
  }
  net_->Isolate("b", true);
  for (const std::string r : {"a", "d"}) {
    auto start = SteadyClock::now();
    StatusOr<StrongResult> v = Run(r, "k", r == "d");
    auto took = SteadyClock::now() - start;
    ASSERT_FALSE(v.ok()) << r;
    EXPECT_EQ(v.status().code(), StatusCode::kUnavailable);
    EXPECT_GE(took, std::chrono::milliseconds(250)) << r;  // It waited for a quorum...
    EXPECT_LT(took, std::chrono::seconds(3)) << r;         // ...and gave up near the timeout.
  }
  // Healed: the value is every acknowledged increment, plus the one left indeterminate.
  net_->Isolate("b", false);
  net_->Isolate("c", false);
  StatusOr<StrongResult> v = Run("c", "k", true);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_GE(v->value, 4);
  EXPECT_LE(v->value, 5);
}

TEST_F(StrongServiceTest, ARestartedVoterChangesNoOutcome) {
  Start(5, {"a", "b", "c"}, {"a", "b", "c"});
  for (int i = 1; i <= 5; ++i) ASSERT_EQ(Run("a", "k", false)->value, i);
  // "a" crashes and comes back with a new incarnation; its acceptor state is what it synced.
  Close(nodes_["a"]);
  Open(nodes_["a"]);
  EXPECT_NE(nodes_["a"].strong->StatusJson().find("\"incarnation\":2"), std::string::npos);
  for (int i = 6; i <= 8; ++i) ASSERT_EQ(Run("a", "k", false)->value, i);
  // The others' rounds see it too, and with two of three voters down nothing is decided.
  ASSERT_EQ(Run("b", "k", true)->value, 8);
  Close(nodes_["b"]);
  Close(nodes_["c"]);
  Close(nodes_["a"]);  // Rebuilt with a short timeout.
  timeout_ = std::chrono::milliseconds(200);
  Open(nodes_["a"]);
  EXPECT_FALSE(Run("a", "k", true).ok());
  Open(nodes_["b"]);
  ASSERT_EQ(Run("a", "k", false)->value, 9);
}

TEST_F(StrongServiceTest, AVoterRedecidesWhatItAcceptedButNeverApplied) {
  // As if a proposer crashed after its accept reached "b" and before anyone stored the value:
  // "b" restarts holding an accepted value its replica lacks.
  Start(6, {"a", "b", "c"}, {"a", "b", "c"});
  Close(nodes_["b"]);
  {
    auto store = storage::Store::Open(nodes_["b"].dir.string());
    ASSERT_TRUE(store.ok());
    crdt::PnCounter c;
    ASSERT_TRUE(c.Add(service::kStrongOrigin, 5, 1).ok());
    pb::AcceptorRecord rec;
    rec.mutable_promised()->set_n(1);
    rec.mutable_promised()->set_id(16);
    *rec.mutable_accepted() = rec.promised();
    SetRegisterCounter(c, rec.mutable_value());
    rocksdb::WriteBatch wb;
    wb.Put(storage::StrongKey("k"), rec.SerializeAsString());
    ASSERT_TRUE((*store)->Write(&wb, true).ok());
  }
  Open(nodes_["b"]);
  auto deadline = SteadyClock::now() + std::chrono::seconds(10);
  while (nodes_["b"].counters->Read("k")->value != 5 && SteadyClock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(nodes_["b"].counters->Read("k")->value, 5);
  ASSERT_EQ(Run("a", "k", false)->value, 6);
}

TEST_F(StrongServiceTest, AChosenValueWhoseProposerVanishedIsStoredByTheOthers) {
  // "a" gets its accept through to "b" and "c" (the value is chosen) and dies before storing
  // it: no replica holds it. The voters that accepted it notice it never arrived and decide the
  // counter again, which stores it (here at the leader, "a" being back; in a cluster it then
  // replicates everywhere).
  Start(7, {"a", "b", "c"}, {"a", "b", "c"});
  crdt::PnCounter c;
  ASSERT_TRUE(c.Add(service::kStrongOrigin, 7, 1).ok());
  pb::Request req;
  pb::Accept* a = req.mutable_accept();
  a->set_key("w");
  a->mutable_ballot()->set_n(5);
  a->mutable_ballot()->set_id(1);
  SetRegisterCounter(c, a->mutable_value());
  for (const std::string to : {"b", "c"}) {
    std::promise<bool> accepted;
    nodes_["a"].endpoint->Call(
        to, req.SerializeAsString(), [&accepted](StatusOr<std::string> r, bool) {
          pb::Reply reply;
          accepted.set_value(r.ok() && reply.ParseFromString(*r) && reply.ok());
        });
    ASSERT_TRUE(accepted.get_future().get()) << to;
  }
  auto stored = [this] {
    for (const std::string r : {"a", "b", "c"}) {
      if (nodes_[r].counters->Read("w")->value == 7) return true;
    }
    return false;
  };
  auto deadline = SteadyClock::now() + std::chrono::seconds(15);
  while (!stored() && SteadyClock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(stored());
  // Either voter that accepted it may get there first; the other then finds it applied.
  int64_t redecided = 0;
  for (const std::string r : {"b", "c"}) {
    redecided += nlohmann::json::parse(nodes_[r].strong->StatusJson())["redecided"].get<int64_t>();
  }
  EXPECT_GE(redecided, 1) << nodes_["b"].strong->StatusJson() << nodes_["c"].strong->StatusJson();
  ASSERT_EQ(Run("c", "w", false)->value, 8);
}

TEST_F(StrongServiceTest, AHandedOverBatchReachingAnIdleLeaderIsAppliedWhole) {
  // The leader (a) gets voter b's batch of three increments as one segment while it has no
  // round on the counter: one round applies all three, each with its own value (a round per
  // operation would answer the later ones from the first one's record).
  Start(9, {"a", "b", "c"}, {"a", "b", "c"});
  auto hand = [this](uint64_t batch, uint32_t timeout_ms) {
    pb::Request handed;
    pb::Forward* f = handed.mutable_forward();
    f->set_key("seg");
    f->set_proposer("b/1");
    f->set_batch(batch);
    f->set_timeout_ms(timeout_ms);
    for (int i = 0; i < 3; ++i) f->add_ops()->set_delta(1);
    std::promise<std::optional<pb::Reply>> p;
    nodes_["b"].endpoint->Call(
        "a", handed.SerializeAsString(), [&p](StatusOr<std::string> r, bool) {
          pb::Reply reply;
          p.set_value(r.ok() && reply.ParseFromString(*r) ? std::optional<pb::Reply>(reply)
                                                          : std::nullopt);
        });
    std::set<int64_t> values;
    std::optional<pb::Reply> reply = p.get_future().get();
    EXPECT_TRUE(reply.has_value());
    if (!reply) return values;
    EXPECT_EQ(reply->results_size(), 3);
    for (const pb::Reply& one : reply->results()) {
      EXPECT_TRUE(one.ok()) << one.message();
      values.insert(one.result());
    }
    return values;
  };
  EXPECT_EQ(hand(7, 5000), (std::set<int64_t>{1, 2, 3}));
  // A batch whose callers' deadlines are (nearly) over is still applied whole: its proposer's
  // own accept may have chosen it, and only a whole round settles it. (Messages take up to 5 ms
  // here, so a round cannot end within the 1 ms the callers had left.)
  net_->SetMaxDelayUs(5000);
  EXPECT_EQ(hand(8, 1), (std::set<int64_t>{4, 5, 6}));
  EXPECT_EQ(Run("c", "seg", true)->value, 6);
}

TEST_F(StrongServiceTest, HostilePeerMessagesAreRefusedWithoutEffect) {
  Start(8, {"a", "b", "c", "d"}, {"a", "b", "c"});
  // Sends raw bytes from `from` to `to`; the parsed reply (nullopt: none, or not a Reply).
  auto send = [this](const std::string& from, const std::string& to, const std::string& bytes) {
    std::promise<std::optional<pb::Reply>> p;
    nodes_[from].endpoint->Call(to, bytes, [&p](StatusOr<std::string> r, bool) {
      pb::Reply reply;
      p.set_value(r.ok() && reply.ParseFromString(*r) ? std::optional<pb::Reply>(reply)
                                                      : std::nullopt);
    });
    return p.get_future().get();
  };
  auto refused = [](const std::optional<pb::Reply>& r) {
    return r.has_value() && !r->ok() && r->code() != 0 && !r->message().empty();
  };
  pb::Request prepare;
  prepare.mutable_prepare()->set_key("h");
  prepare.mutable_prepare()->mutable_ballot()->set_n(1000);
  prepare.mutable_prepare()->mutable_ballot()->set_id(1);
  pb::Request bad_key = prepare;
  bad_key.mutable_prepare()->set_key("bad\nkey");
  pb::Request no_ops;
  no_ops.mutable_forward()->set_key("h");
  pb::Request forward;
  forward.mutable_forward()->set_key("h");
  forward.mutable_forward()->add_ops()->set_delta(1);
  forward.mutable_forward()->set_timeout_ms(1000);

  EXPECT_TRUE(refused(send("a", "b", "\xff\xff garbage")));                 // Not a Request.
  EXPECT_TRUE(refused(send("a", "b", pb::Request().SerializeAsString())));  // Empty.
  for (const std::string to : {"a", "b", "c"}) {                            // Not from a voter.
    EXPECT_TRUE(refused(send("d", to, prepare.SerializeAsString()))) << to;
  }
  EXPECT_TRUE(refused(send("a", "b", bad_key.SerializeAsString())));
  EXPECT_TRUE(refused(send("a", "b", no_ops.SerializeAsString())));
  EXPECT_TRUE(refused(send("a", "d", forward.SerializeAsString())));  // d is not a voter.
  // Key writes in a forward are checked as a client's: the whole message is refused, and none
  // of its operations (a valid one first) is applied.
  auto key_forward = [](std::function<void(pb::KeyWrite*)> spoil) {
    pb::Request r;
    pb::Forward* f = r.mutable_forward();
    f->set_key(KeyInstance("hk"));
    f->set_timeout_ms(1000);
    f->add_ops()->mutable_write()->set_value("fine");
    spoil(f->add_ops()->mutable_write());
    return r.SerializeAsString();
  };
  EXPECT_TRUE(refused(send("d", "a", key_forward([](pb::KeyWrite* w) { w->set_kind(7); }))));
  EXPECT_TRUE(refused(send("d", "a", key_forward([](pb::KeyWrite* w) { w->set_ttl_ms(-5); }))));
  EXPECT_TRUE(refused(send("d", "a", key_forward([](pb::KeyWrite* w) {
                             w->set_kind(2);  // A touch without a TTL.
                           }))));
  EXPECT_TRUE(refused(send("d", "a", key_forward([](pb::KeyWrite* w) {
                             w->set_value(std::string(service::kMaxValueBytes + 1, 'x'));
                           }))));
  EXPECT_TRUE(refused(
      send("d", "a", key_forward([](pb::KeyWrite* w) { w->set_content_type("bad\ntype"); }))));
  EXPECT_EQ(RunKey("b", "hk", true).status().code(), StatusCode::kNotFound);
  // Nothing of it took effect: had the prepare at ballot 1000 been promised, the first real
  // round (at ballot 1) would have been refused and retried; it is decided without a conflict,
  // and the counter holds only what it adds.
  ASSERT_EQ(Run("d", "h", false)->value, 1);
  ASSERT_EQ(Run("b", "h", true)->value, 1);
  for (const std::string v : {"a", "b", "c"}) {
    EXPECT_NE(nodes_[v].strong->StatusJson().find("\"conflicts\":0"), std::string::npos)
        << nodes_[v].strong->StatusJson();
  }
}

TEST_F(StrongServiceTest, KeysConditionalWritesLoseNothingFromAnyRegion) {
  Start(21, {"a", "b", "c", "d"}, {"a", "b", "c"});
  service::RegisterWrite create;
  create.value = "0";
  create.if_none_match = true;
  StatusOr<StrongResult> made = RunKey("d", "acct", false, create);  // Through a forward.
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_FALSE(made->existed);
  StatusOr<StrongResult> again = RunKey("a", "acct", false, create);
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  StatusOr<StrongResult> missing = RunKey("b", "none", true);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);

  auto [replaced, unknown] = CasLoad(/*clients=*/2, /*writes_per_client=*/8);
  EXPECT_EQ(unknown, 0u);
  ASSERT_EQ(replaced.size(), 64u);
  std::sort(replaced.begin(), replaced.end());
  for (size_t i = 0; i < replaced.size(); ++i) EXPECT_EQ(replaced[i], static_cast<int64_t>(i));
  StatusOr<StrongResult> final_read = RunKey("d", "acct", true);
  ASSERT_TRUE(final_read.ok());
  EXPECT_EQ(final_read->reg->value, "64");
  ExpectLinearizable();  // Reads too: none saw a value older than a write finished before it.
  // The chosen write is an ordinary write of the proposing voters' replicas too.
  bool stored = false;
  for (const std::string r : {"a", "b", "c"}) {
    auto reg = nodes_[r].counters->GetRegister(storage::RecordType::kKey, "acct");
    ASSERT_TRUE(reg.ok());
    stored |= *reg && (*reg)->value == "64";
  }
  EXPECT_TRUE(stored);
}

TEST_F(StrongServiceTest, KeysOverALossyNetworkLoseNoAcknowledgedWrite) {
  Start(22, {"a", "b", "c", "d"}, {"a", "b", "c"}, std::chrono::milliseconds(400));
  service::RegisterWrite create;
  create.value = "0";
  ASSERT_TRUE(RunKey("a", "acct", false, create).ok());
  net_->SetLoss(0.05);
  net_->SetMaxDelayUs(2000);
  auto [replaced, unknown] = CasLoad(/*clients=*/2, /*writes_per_client=*/5);
  net_->SetLoss(0);
  // Each acknowledged write replaced a value no other write replaced; the final value counts
  // every acknowledged write, and at most the unknown ones besides.
  std::sort(replaced.begin(), replaced.end());
  EXPECT_EQ(std::adjacent_find(replaced.begin(), replaced.end()), replaced.end());
  StatusOr<StrongResult> final_read = RunKey("a", "acct", true);
  ASSERT_TRUE(final_read.ok()) << final_read.status().ToString();
  const int64_t v = std::stoll(final_read->reg->value);
  EXPECT_GE(v, static_cast<int64_t>(replaced.size()));
  EXPECT_LE(v, static_cast<int64_t>(replaced.size() + unknown));
  EXPECT_GT(replaced.size(), 0u);
  ExpectLinearizable();
}

TEST_F(StrongServiceTest, TheCheckerCatchesKeyReadsServedLocally) {
  // The deliberately wrong build option: strong reads of keys answered from the local replica.
  // The non-voter's replica never gets the writes here (no replication in this test), so its
  // reads go stale, and the history must say so.
  fault_local_reads_ = true;
  Start(23, {"a", "b", "c", "d"}, {"a", "b", "c"});
  service::RegisterWrite create;
  create.value = "0";
  ASSERT_TRUE(RunKey("a", "acct", false, create).ok());
  // The other replicas lack even the create: seed them so their stale reads parse.
  for (const std::string r : {"b", "c", "d"}) {
    std::promise<StatusOr<service::RegisterResult>> seeded;
    nodes_[r].counters->WriteRegister(
        storage::RecordType::kKey, "acct", create,
        [&](StatusOr<service::RegisterResult> w) { seeded.set_value(std::move(w)); });
    ASSERT_TRUE(seeded.get_future().get().ok());
  }
  CasLoad(/*clients=*/1, /*writes_per_client=*/4, std::chrono::milliseconds(1500));
  bool violation = false;
  for (const auto& [key, ops] : history_) {
    violation |= lincheck::Check(ops, 0).verdict == lincheck::Verdict::kViolation;
  }
  EXPECT_TRUE(violation);
}

}  // namespace
}  // namespace edgestate::strong
