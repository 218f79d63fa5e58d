#include "service/keyspace.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <utility>

#include "common/test_dir.h"

namespace edgestate::service {
namespace {

class KeyspaceTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = FreshTestDir(); }
  void TearDown() override {
    svc_.reset();  // Closed before their directory goes.
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Opens store + service; the previous pair (if any) is closed first.
  // The sweep runs every `sweep_ms` (by default not during a test).
  void Open(Durability d = Durability::kFsync, bool has_peers = false,
            std::chrono::milliseconds sweep = std::chrono::hours(1)) {
    svc_.reset();
    store_.reset();
    metrics_ = std::make_unique<MetricsRegistry>();
    auto st = storage::Store::Open(dir_.string());
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    store_ = std::move(st).value();
    KeyspaceOptions o;
    o.region = "iad";
    o.durability = d;
    o.async_sync_interval = std::chrono::milliseconds(5);
    o.clock = &clock_;
    o.has_peers = has_peers;
    o.sweep_interval = sweep;
    o.max_pending_writes = max_pending_writes_;
    o.max_pending_write_bytes = max_pending_write_bytes_;
    o.on_loaded = on_loaded_;
    auto svc = Keyspace::Open(store_.get(), o, metrics_.get());
    ASSERT_TRUE(svc.ok()) << svc.status().ToString();
    svc_ = std::move(svc).value();
    if (load_) svc_->StartLoading();
  }

  StatusOr<CounterValue> IncrementSync(const std::string& name, int64_t delta) {
    std::promise<StatusOr<CounterValue>> p;
    svc_->Increment(name, delta, [&](StatusOr<CounterValue> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  }

  std::filesystem::path dir_;
  size_t max_pending_writes_ = 0;
  size_t max_pending_write_bytes_ = 0;
  bool load_ = true;  // Open starts the background load.
  std::function<void(const Status&)> on_loaded_;
  FakeClock clock_{1'800'000'000'000};
  std::unique_ptr<MetricsRegistry> metrics_;
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<Keyspace> svc_;
};

TEST(ValidateCounterNameTest, Rules) {
  EXPECT_TRUE(ValidateCounterName("page:views/home").ok());
  EXPECT_TRUE(ValidateCounterName("caf\xc3\xa9").ok());
  EXPECT_TRUE(ValidateCounterName(std::string(256, 'a')).ok());
  EXPECT_FALSE(ValidateCounterName("").ok());
  EXPECT_FALSE(ValidateCounterName(std::string(257, 'a')).ok());
  EXPECT_FALSE(ValidateCounterName("a\nb").ok());
  EXPECT_FALSE(ValidateCounterName(std::string("a\0b", 3)).ok());
  EXPECT_FALSE(ValidateCounterName("a\x7f").ok());
  EXPECT_FALSE(ValidateCounterName("\xc3").ok());
}

// Holds the writer thread inside its first commit until Release(): the writes submitted
// meanwhile stay pending. (Blocks in the commit listener, which production code must not do.)
class WriterGate {
 public:
  void Attach(Keyspace* ks) {
    ks->SetCommitListener([this] {
      std::unique_lock lock(mu_);
      if (held_) return;
      held_ = true;
      cv_.notify_all();
      cv_.wait(lock, [this] { return released_; });
    });
  }
  void WaitHeld() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return held_; });
  }
  void Release() {
    std::lock_guard lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false;
  bool released_ = false;
};

TEST_F(KeyspaceTest, WritesBeyondThePendingBoundAreRefusedAtOnceAndNothingChanges) {
  max_pending_writes_ = 3;
  Open();
  WriterGate gate;
  gate.Attach(svc_.get());
  std::vector<std::future<StatusOr<CounterValue>>> answers;
  auto submit = [&](int64_t delta) {
    auto p = std::make_shared<std::promise<StatusOr<CounterValue>>>();
    answers.push_back(p->get_future());
    svc_->Increment("c", delta, [p](StatusOr<CounterValue> r) { p->set_value(std::move(r)); });
  };
  submit(1);
  gate.WaitHeld();  // The first write is committed; its answer waits with the writer.
  submit(10);
  submit(100);
  // Three pending: the fourth and fifth are refused before they queue, answered at once.
  submit(1000);
  submit(1000);
  for (size_t i : {3u, 4u}) {
    ASSERT_EQ(answers[i].wait_for(std::chrono::seconds(0)), std::future_status::ready);
    StatusOr<CounterValue> r = answers[i].get();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
    EXPECT_NE(r.status().message().find("overloaded"), std::string::npos);
  }
  gate.Release();
  for (size_t i : {0u, 1u, 2u}) EXPECT_TRUE(answers[i].get().ok());
  EXPECT_EQ(svc_->Read("c")->value, 111);  // The refused ones changed nothing.
  // Answered writes no longer count: the bound admits again.
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(IncrementSync("c", 1).ok());
  EXPECT_EQ(svc_->Read("c")->value, 116);
  EXPECT_NE(metrics_->Render().find("edgestate_writes_overloaded_total 2"), std::string::npos);
  EXPECT_NE(metrics_->Render().find("edgestate_pending_writes 0"), std::string::npos);
}

TEST_F(KeyspaceTest, ThePendingByteBoundCountsValuesButAdmitsALoneLargeWrite) {
  max_pending_write_bytes_ = 1000;
  Open();
  WriterGate gate;
  gate.Attach(svc_.get());
  auto put = [&](const std::string& name, size_t bytes) {
    auto p = std::make_shared<std::promise<StatusOr<RegisterResult>>>();
    auto f = p->get_future();
    RegisterWrite w;
    w.value = std::string(bytes, 'v');
    svc_->WriteRegister(storage::RecordType::kKey, name, std::move(w),
                        [p](StatusOr<RegisterResult> r) { p->set_value(std::move(r)); });
    return f;
  };
  auto big = put("big", 5000);  // Alone: admitted although over the bound.
  gate.WaitHeld();
  auto small = put("small", 100);  // 5000 + 100 held: refused.
  ASSERT_EQ(small.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  StatusOr<RegisterResult> refused = small.get();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  gate.Release();
  EXPECT_TRUE(big.get().ok());
  EXPECT_TRUE(put("small", 100).get().ok());
  auto stored = svc_->GetRegister(storage::RecordType::kKey, "small");
  ASSERT_TRUE(stored.ok() && stored->has_value());
}

TEST_F(KeyspaceTest, UnwrittenCounterReadsZero) {
  Open();
  CounterValue v = *svc_->Read("nope");
  EXPECT_EQ(v.value, 0);
  EXPECT_EQ(v.updated_at_ms, 0);
  EXPECT_EQ(svc_->size(), 0u);
}

TEST_F(KeyspaceTest, IncrementReturnsNewValueAndIsReadable) {
  Open();
  auto r = IncrementSync("a", 5);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->value, 5);
  EXPECT_EQ(r->updated_at_ms, 1'800'000'000'000);
  r = IncrementSync("a", -8);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->value, -3);
  EXPECT_EQ(svc_->Read("a")->value, -3);
  EXPECT_EQ(svc_->size(), 1u);
}

TEST_F(KeyspaceTest, OverflowIsRejectedAndChangesNothing) {
  Open();
  ASSERT_TRUE(IncrementSync("a", std::numeric_limits<int64_t>::max()).ok());
  auto r = IncrementSync("a", 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(svc_->Read("a")->value, std::numeric_limits<int64_t>::max());
  Open();  // And nothing of the rejected write reached the disk.
  EXPECT_EQ(svc_->Read("a")->value, std::numeric_limits<int64_t>::max());
}

TEST_F(KeyspaceTest, AcknowledgedIncrementsSurviveReopen) {
  Open();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(IncrementSync("x", 2).ok());
  ASSERT_TRUE(IncrementSync("y", -1).ok());
  Open();
  EXPECT_EQ(svc_->Read("x")->value, 20);
  EXPECT_EQ(svc_->Read("y")->value, -1);
  EXPECT_EQ(svc_->size(), 2u);
}

TEST_F(KeyspaceTest, ConcurrentIncrementsAllCountAndShareBatches) {
  Open();
  constexpr int kThreads = 8, kEach = 300;
  std::atomic<int> acked{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        std::promise<void> p;
        svc_->Increment(t % 2 ? "odd" : "even", 1, [&](StatusOr<CounterValue> r) {
          if (r.ok()) acked++;
          p.set_value();
        });
        p.get_future().wait();
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(acked.load(), kThreads * kEach);
  EXPECT_EQ(svc_->Read("odd")->value + svc_->Read("even")->value, kThreads * kEach);
  std::string m = metrics_->Render();
  // With 8 concurrent writers some batches must carry more than one write.
  EXPECT_NE(m.find("edgestate_commit_batch_size_count"), std::string::npos);
  Open();
  EXPECT_EQ(svc_->Read("odd")->value + svc_->Read("even")->value, kThreads * kEach);
}

TEST_F(KeyspaceTest, AsyncModeAcknowledgesAndSyncs) {
  Open(Durability::kAsync);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(IncrementSync("a", 1).ok());
  Open(Durability::kAsync);
  EXPECT_EQ(svc_->Read("a")->value, 50);
  EXPECT_NE(metrics_->Render().find("edgestate_async_unsynced_writes_count"), std::string::npos);
}

TEST_F(KeyspaceTest, ProbeSucceedsOnHealthyStore) {
  Open();
  std::promise<Status> p;
  svc_->ProbeStorage([&](Status s) { p.set_value(s); });
  EXPECT_TRUE(p.get_future().get().ok());
}

TEST_F(KeyspaceTest, AfterStopWritesFailFastAndReadsStillWork) {
  Open();
  ASSERT_TRUE(IncrementSync("a", 1).ok());
  svc_->Stop();
  auto r = IncrementSync("a", 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(svc_->Read("a")->value, 1);
}

TEST_F(KeyspaceTest, CorruptRecordFailsOpenLoudly) {
  Open();
  svc_.reset();
  rocksdb::WriteBatch wb;
  wb.Put(storage::CounterKey("bad"), "\xff\xff\xff");
  ASSERT_TRUE(store_->Write(&wb, true).ok());
  KeyspaceOptions o;
  o.region = "iad";
  auto svc = Keyspace::Open(store_.get(), o, metrics_.get());
  ASSERT_FALSE(svc.ok());
  EXPECT_NE(svc.status().message().find("bad"), std::string::npos);
}

TEST_F(KeyspaceTest, CountersNotLoadedYetAreServedFromTheStoreAndNeverGoBack) {
  Open();
  ASSERT_TRUE(IncrementSync("x", 5).ok());
  ASSERT_TRUE(IncrementSync("y", 3).ok());
  ASSERT_TRUE(IncrementSync("z", -2).ok());
  load_ = false;
  Open();
  EXPECT_FALSE(svc_->loaded());
  EXPECT_EQ(svc_->size(), 0u);
  // A read brings the stored state in; a counter never written reads as 0 and stays out.
  EXPECT_EQ(svc_->Read("x")->value, 5);
  EXPECT_EQ(svc_->Read("nope")->value, 0);
  EXPECT_EQ(svc_->size(), 1u);
  // A write to a counter not in memory starts from its stored state, not from zero.
  auto y = IncrementSync("y", 4);
  ASSERT_TRUE(y.ok()) << y.status().ToString();
  EXPECT_EQ(y->value, 7);
  EXPECT_EQ(svc_->State("z")->Value(), -2);
  // The load, arriving later with what it read from the store, never replaces a newer state.
  ASSERT_TRUE(IncrementSync("x", 1).ok());
  svc_->StartLoading();
  ASSERT_TRUE(svc_->WaitLoaded().ok());
  EXPECT_TRUE(svc_->loaded());
  EXPECT_EQ(svc_->size(), 3u);
  EXPECT_EQ(svc_->Read("x")->value, 6);
  EXPECT_EQ(svc_->Read("y")->value, 7);
  EXPECT_EQ(svc_->Read("z")->value, -2);
  // Only the writes since the restart are new own changes: the sequence went on from the store.
  std::vector<SlotUpdate> out;
  auto c = svc_->CollectOwnChanges(3, 100, &out);
  EXPECT_EQ(c.covers, 5u);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].name, "y");
  EXPECT_EQ(out[1].name, "x");
}

TEST_F(KeyspaceTest, RemoteSlotsMergeIntoCountersNotLoadedYet) {
  Open();
  ASSERT_TRUE(IncrementSync("x", 5).ok());
  load_ = false;
  Open();
  std::promise<Status> p;
  svc_->ApplyRemote("lhr", 1'760'000'000, 2,
                    {SlotUpdate{"x", crdt::Slot{10, 1, 2, 1'700'000'000'000}}},
                    [&](Status s) { p.set_value(s); });
  ASSERT_TRUE(p.get_future().get().ok());
  EXPECT_EQ(svc_->Read("x")->value, 14);
  svc_->StartLoading();
  ASSERT_TRUE(svc_->WaitLoaded().ok());
  EXPECT_EQ(svc_->Read("x")->value, 14);
  load_ = true;
  Open();
  ASSERT_TRUE(svc_->WaitLoaded().ok());
  EXPECT_EQ(svc_->Read("x")->value, 14);
}

TEST_F(KeyspaceTest, ADamagedCounterFoundByTheLoadIsReportedAndNeverReadAsZero) {
  Open();
  ASSERT_TRUE(IncrementSync("x", 5).ok());  // An indexed store: the load runs in the background.
  svc_.reset();
  rocksdb::WriteBatch wb;
  wb.Put(storage::CounterKey("bad"), "\xff\xff\xff");
  ASSERT_TRUE(store_->Write(&wb, true).ok());
  load_ = false;
  std::promise<Status> reported;
  on_loaded_ = [&](const Status& s) { reported.set_value(s); };
  Open();
  StatusOr<CounterValue> bad = svc_->Read("bad");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bad"), std::string::npos) << bad.status().ToString();
  auto inc = IncrementSync("bad", 1);
  EXPECT_EQ(inc.status().code(), StatusCode::kUnavailable) << inc.status().ToString();
  EXPECT_EQ(svc_->Read("x")->value, 5);
  svc_->StartLoading();
  Status s = reported.get_future().get();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("bad"), std::string::npos) << s.ToString();
  EXPECT_EQ(svc_->WaitLoaded().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(svc_->loaded());
}

TEST_F(KeyspaceTest, AfterStopNothingLoadsAndWaitingEnds) {
  Open();
  ASSERT_TRUE(IncrementSync("x", 5).ok());
  bool called = false;
  on_loaded_ = [&](const Status&) { called = true; };
  load_ = false;
  Open();
  svc_->Stop();
  svc_->StartLoading();
  EXPECT_EQ(svc_->WaitLoaded().code(), StatusCode::kAborted);
  EXPECT_FALSE(svc_->loaded());
  EXPECT_FALSE(called);
  EXPECT_EQ(svc_->Read("x")->value, 5);  // Reads still work after Stop, from the store.
}

}  // namespace
}  // namespace edgestate::service

namespace edgestate::service {
namespace {

constexpr uint32_t kLhrEpoch = 1'760'000'000;

Status ApplySync(Keyspace* svc, const std::string& origin, uint64_t covers,
                 std::vector<SlotUpdate> slots, uint32_t epoch = kLhrEpoch) {
  std::promise<Status> p;
  svc->ApplyRemote(origin, epoch, covers, std::move(slots), [&](Status s) { p.set_value(s); });
  return p.get_future().get();
}

SlotUpdate Slot(const std::string& name, uint64_t inc, uint64_t dec, uint64_t version) {
  return SlotUpdate{name, crdt::Slot{inc, dec, version, 1'700'000'000'000 + int64_t(version)}};
}

using End = Keyspace::CollectedChanges::End;

// The end, covers and resume position of one collection, for comparisons.
std::tuple<End, uint64_t, uint64_t> Got(const Keyspace::CollectedChanges& c) {
  return {c.end, c.covers, c.resume_after};
}

TEST_F(KeyspaceTest, OwnChangesAreCollectedOncePerCounterInSeqOrder) {
  Open();
  ASSERT_TRUE(IncrementSync("a", 1).ok());  // seq 1
  ASSERT_TRUE(IncrementSync("b", 2).ok());  // seq 2
  ASSERT_TRUE(IncrementSync("a", 3).ok());  // seq 3: a's entry moves from 1 to 3
  EXPECT_EQ(svc_->CommittedSeq(), 3u);
  std::vector<SlotUpdate> out;
  EXPECT_EQ(Got(svc_->CollectOwnChanges(0, 100, &out)), std::tuple(End::kComplete, 3u, 3u));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].name, "b");
  EXPECT_EQ(out[1].name, "a");
  EXPECT_EQ(out[1].slot.inc, 4u);
  EXPECT_EQ(out[1].slot.version, 3u);
  out.clear();
  EXPECT_EQ(Got(svc_->CollectOwnChanges(2, 100, &out)), std::tuple(End::kComplete, 3u, 3u));
  ASSERT_EQ(out.size(), 1u);
  out.clear();
  EXPECT_EQ(Got(svc_->CollectOwnChanges(3, 100, &out)), std::tuple(End::kComplete, 3u, 3u));
  EXPECT_TRUE(out.empty());
  // The sequence and the change log survive a restart.
  Open();
  EXPECT_EQ(svc_->CommittedSeq(), 3u);
  out.clear();
  EXPECT_EQ(Got(svc_->CollectOwnChanges(0, 100, &out)), std::tuple(End::kComplete, 3u, 3u));
  EXPECT_EQ(out.size(), 2u);
  ASSERT_TRUE(IncrementSync("c", 1).ok());
  EXPECT_EQ(svc_->CommittedSeq(), 4u);
}

// A limit ends a collection without covering more: "b" (seq 2) alone does not hold a's write
// of seq 1, whose entry moved to 3. The pass goes on from 2 and its complete call covers all.
TEST_F(KeyspaceTest, ALimitedCollectionCoversNothingNewUntilThePassCompletes) {
  Open();
  ASSERT_TRUE(IncrementSync("a", 1).ok());  // seq 1
  ASSERT_TRUE(IncrementSync("b", 2).ok());  // seq 2
  ASSERT_TRUE(IncrementSync("a", 3).ok());  // seq 3
  std::vector<SlotUpdate> out;
  EXPECT_EQ(Got(svc_->CollectOwnChanges(0, 1, &out)), std::tuple(End::kLimit, 0u, 2u));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].name, "b");
  out.clear();
  EXPECT_EQ(Got(svc_->CollectOwnChanges(2, 1, &out)), std::tuple(End::kComplete, 3u, 3u));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].name, "a");
  EXPECT_EQ(out[0].slot.inc, 4u);
}

// The sequence is read before the scan. A write committing in between moves a's entry from
// seq 2 (covered) to 3 (not yet): the collection still takes a, or a replica told it holds
// seq 2 would lack a's acknowledged write of seq 2 (a staleness bound broken).
TEST_F(KeyspaceTest, AnEntryMovedPastTheCoveredSequenceDuringTheScanIsTaken) {
  Open();
  ASSERT_TRUE(IncrementSync("a", 1).ok());  // seq 1
  std::vector<SlotUpdate> out;
  EXPECT_EQ(Got(svc_->CollectOwnChanges(0, 100, &out)), std::tuple(End::kComplete, 1u, 1u));
  ASSERT_TRUE(IncrementSync("a", 1).ok());  // seq 2, acknowledged
  bool moved = false;
  svc_->TEST_SetBeforeChangeScan([&] {
    if (!std::exchange(moved, true)) {
      ASSERT_TRUE(IncrementSync("a", 1).ok());  // seq 3
    }
  });
  out.clear();
  EXPECT_EQ(Got(svc_->CollectOwnChanges(1, 100, &out)), std::tuple(End::kComplete, 2u, 2u));
  ASSERT_TRUE(moved);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].name, "a");
  EXPECT_GE(out[0].slot.inc, 2u);
}

// Replication's contract under concurrent writes, through the replicator's loop: a replica
// that applied a pass holds every write acknowledged before the pass's complete call began.
// Three hot counters move their entries on every commit; a limit of 2 splits every pass.
TEST_F(KeyspaceTest, PassesCoverEveryWriteAcknowledgedBeforeThemUnderConcurrentWrites) {
  Open(Durability::kAsync);
  constexpr int kCounters = 3;
  constexpr int kWrites = 60'000;
  constexpr size_t kInFlight = 64;
  const std::string names[kCounters] = {"hot-a", "hot-b", "hot-c"};
  std::atomic<int64_t> acked[kCounters] = {};
  std::atomic<bool> writing{true};
  std::thread writer([&] {
    std::mutex mu;
    std::condition_variable cv;
    size_t in_flight = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (int i = 0; i < kWrites && std::chrono::steady_clock::now() < deadline; ++i) {
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return in_flight < kInFlight; });
        in_flight++;
      }
      const int k = i % kCounters;
      svc_->Increment(names[k], 1, [&, k](StatusOr<CounterValue> r) {
        if (r.ok()) acked[k].fetch_add(1);
        std::lock_guard lock(mu);
        in_flight--;
        cv.notify_one();
      });
    }
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return in_flight == 0; });
    writing.store(false);
  });
  uint64_t cursor = 0;
  std::map<std::string, uint64_t> replica;
  int passes = 0, misses = 0;
  int64_t before[kCounters] = {};
  bool pass_begun = false;
  while (writing.load() || passes == 0) {
    if (!pass_begun) {
      for (int k = 0; k < kCounters; ++k) before[k] = acked[k].load();
      pass_begun = true;
    }
    std::vector<SlotUpdate> out;
    const Keyspace::CollectedChanges got = svc_->CollectOwnChanges(cursor, 2, &out);
    ASSERT_NE(got.end, End::kFailed);
    for (const SlotUpdate& u : out) replica[u.name] = std::max(replica[u.name], u.slot.inc);
    cursor = got.resume_after;
    if (got.end == End::kLimit) continue;
    // Acknowledged before the complete call began, hence before the pass's sequence read.
    passes++;
    pass_begun = false;
    for (int k = 0; k < kCounters; ++k) {
      if (static_cast<int64_t>(replica[names[k]]) < before[k]) misses++;
    }
  }
  writer.join();
  EXPECT_EQ(misses, 0) << "over " << passes << " passes";
}

TEST_F(KeyspaceTest, RemoteSlotsMergeIdempotentlyInAnyOrder) {
  Open();
  ASSERT_TRUE(IncrementSync("x", 5).ok());
  ASSERT_TRUE(ApplySync(svc_.get(), "lhr", 7, {Slot("x", 10, 1, 7), Slot("y", 3, 0, 6)}).ok());
  EXPECT_EQ(svc_->Read("x")->value, 14);
  EXPECT_EQ(svc_->Read("y")->value, 3);
  EXPECT_EQ(svc_->AppliedSeq("lhr", kLhrEpoch), 7u);
  // Duplicate delivery.
  ASSERT_TRUE(ApplySync(svc_.get(), "lhr", 7, {Slot("x", 10, 1, 7), Slot("y", 3, 0, 6)}).ok());
  EXPECT_EQ(svc_->Read("x")->value, 14);
  // An older state arriving late changes nothing, and never lowers the applied position.
  ASSERT_TRUE(ApplySync(svc_.get(), "lhr", 3, {Slot("x", 4, 0, 3)}).ok());
  EXPECT_EQ(svc_->Read("x")->value, 14);
  EXPECT_EQ(svc_->AppliedSeq("lhr", kLhrEpoch), 7u);
  // Remote writes never enter this node's own change log.
  std::vector<SlotUpdate> out;
  svc_->CollectOwnChanges(0, 100, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].slot.inc, 5u);
  // All of it is durable.
  Open();
  EXPECT_EQ(svc_->Read("x")->value, 14);
  EXPECT_EQ(svc_->Read("y")->value, 3);
  EXPECT_EQ(svc_->AppliedSeq("lhr", kLhrEpoch), 7u);
}

TEST_F(KeyspaceTest, ANewEpochOfAnOriginStartsItsSequenceAgain) {
  Open();
  const uint32_t own = svc_->epoch();
  EXPECT_GT(own, 0u);
  ASSERT_TRUE(ApplySync(svc_.get(), "lhr", 500, {Slot("x", 10, 0, 500)}).ok());
  EXPECT_EQ(svc_->AppliedPosition("lhr"), (consistency::OriginPosition{kLhrEpoch, 500}));
  // lhr's data directory was recreated: its writes are numbered from 1 again.
  ASSERT_TRUE(ApplySync(svc_.get(), "lhr", 3, {Slot("z", 1, 0, 3)}, kLhrEpoch + 60).ok());
  EXPECT_EQ(svc_->AppliedPosition("lhr"), (consistency::OriginPosition{kLhrEpoch + 60, 3}));
  EXPECT_EQ(svc_->AppliedSeq("lhr", kLhrEpoch), 0u);  // Nothing is known of the old life now.
  EXPECT_EQ(svc_->AppliedSeq("lhr", kLhrEpoch + 60), 3u);
  // Durable, and this node's own epoch does not change across restarts.
  Open();
  EXPECT_EQ(svc_->AppliedPosition("lhr"), (consistency::OriginPosition{kLhrEpoch + 60, 3}));
  EXPECT_EQ(svc_->epoch(), own);
}

TEST_F(KeyspaceTest, ANewLifeOfAnOriginRetiresItsSlotsAndShipsThemOn) {
  Open();
  // lhr's first life: 10 increments of x, and key k written last by lhr.
  crdt::LwwRegister k;
  k.hlc = {clock_.NowUnixMillis(), 0};
  k.origin = "lhr";
  k.origin_seq = 11;
  k.value = "lhr-old-life";
  std::promise<Status> p;
  svc_->ApplyRemote("lhr", kLhrEpoch, 11, {Slot("x", 10, 0, 10)}, [&](Status s) { p.set_value(s); },
                    {RegisterUpdate{storage::RecordType::kKey, "k", k}});
  ASSERT_TRUE(p.get_future().get().ok());
  ASSERT_TRUE(IncrementSync("y", 1).ok());  // A counter lhr never wrote.
  const uint64_t before = svc_->CommittedSeq();
  // Its directory is recreated: the new life's slot starts from 0 and must add up, not hide
  // behind the old one (a max merge of 10 and 2 would read 10).
  ASSERT_TRUE(ApplySync(svc_.get(), "lhr", 2, {Slot("x", 2, 0, 2)}, kLhrEpoch + 60).ok());
  EXPECT_EQ(svc_->Read("x")->value, 12);
  EXPECT_EQ(svc_->Read("y")->value, 1);
  // The old life's slot and key are re-shipped from here under new own sequence numbers.
  std::vector<SlotUpdate> slots;
  std::vector<RegisterUpdate> regs;
  svc_->CollectOwnChanges(before, 100, &slots, false, &regs, 4u << 20, /*include_retired=*/true);
  const std::string retired = RetiredOrigin("lhr", kLhrEpoch);
  auto has = [&](const std::string& origin, uint64_t inc) {
    return std::any_of(slots.begin(), slots.end(), [&](const SlotUpdate& u) {
      return u.name == "x" && u.origin == origin && u.slot.inc == inc;
    });
  };
  EXPECT_TRUE(has(retired, 10));
  EXPECT_FALSE(has("lhr", 2));  // Never relayed: only lhr ships its live slot.
  ASSERT_EQ(regs.size(), 1u);
  EXPECT_EQ(regs[0].reg.value, "lhr-old-life");
  EXPECT_EQ(regs[0].reg.origin_epoch, kLhrEpoch);
  // Without the flag (a peer that does not take them) no retired slot goes out.
  slots.clear();
  svc_->CollectOwnChanges(before, 100, &slots);
  EXPECT_FALSE(has(retired, 10));
  // Receiving the retired slot again, or a newer one, is a max merge; durable across restarts.
  SlotUpdate again = Slot("x", 11, 0, 10);
  again.origin = retired;
  ASSERT_TRUE(ApplySync(svc_.get(), "fra", 1, {again}).ok());
  EXPECT_EQ(svc_->Read("x")->value, 13);
  Open();
  EXPECT_EQ(svc_->Read("x")->value, 13);
}

TEST_F(KeyspaceTest, ARetirementBeforeTheLoadIsDoneRetiresCountersOnlyInTheStore) {
  Open();
  ASSERT_TRUE(ApplySync(svc_.get(), "lhr", 11, {Slot("x", 10, 0, 10), Slot("z", 4, 0, 11)}).ok());
  load_ = false;
  Open();  // Nothing in memory: the background load never starts.
  const uint64_t before = svc_->CommittedSeq();
  ASSERT_TRUE(ApplySync(svc_.get(), "lhr", 2, {Slot("x", 2, 0, 2)}, kLhrEpoch + 60).ok());
  EXPECT_EQ(svc_->Read("x")->value, 12);
  EXPECT_EQ(svc_->Read("z")->value, 4);
  std::vector<SlotUpdate> slots;
  svc_->CollectOwnChanges(before, 100, &slots, false, nullptr, 4u << 20, /*include_retired=*/true);
  const std::string retired = RetiredOrigin("lhr", kLhrEpoch);
  for (const char* name : {"x", "z"}) {
    EXPECT_TRUE(
        std::any_of(slots.begin(), slots.end(),
                    [&](const SlotUpdate& u) { return u.name == name && u.origin == retired; }))
        << name << " was not retired";
  }
}

TEST_F(KeyspaceTest, ARetiredLifeFromAPeerRetiresTheSameLifeHere) {
  Open();
  ASSERT_TRUE(ApplySync(svc_.get(), "lhr", 5, {Slot("x", 5, 0, 5)}).ok());
  // fra learned of lhr's new life first and relays lhr's old slot under its retired name: this
  // node still holds the same writes under "lhr" and must not count them twice.
  SlotUpdate relayed = Slot("x", 5, 0, 5);
  relayed.origin = RetiredOrigin("lhr", kLhrEpoch);
  ASSERT_TRUE(ApplySync(svc_.get(), "fra", 1, {relayed}).ok());
  EXPECT_EQ(svc_->Read("x")->value, 5);
  // A slot naming this node's own live life is ignored: nobody retires it but its own restart.
  SlotUpdate mine = Slot("x", 100, 0, 1);
  mine.origin = RetiredOrigin("iad", svc_->epoch());
  ASSERT_TRUE(ApplySync(svc_.get(), "fra", 2, {mine}).ok());
  EXPECT_EQ(svc_->Read("x")->value, 5);
  // Malformed lives are refused with the whole delta.
  for (const char* bad : {"lhr@0", "LHR@1", "lhr@x", "@5", "lhr@", "lhr@99999999999"}) {
    SlotUpdate u = Slot("x", 1, 0, 1);
    u.origin = bad;
    EXPECT_EQ(ApplySync(svc_.get(), "fra", 3, {u}).code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST_F(KeyspaceTest, RemoteSlotsForOwnRegionOrBadNamesAreRejected) {
  Open();
  EXPECT_EQ(ApplySync(svc_.get(), "iad", 1, {Slot("x", 1, 0, 1)}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplySync(svc_.get(), "lhr", 1, {Slot("ok", 1, 0, 1), Slot("bad\n", 1, 0, 1)}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(svc_->Read("ok")->value, 0);  // Nothing of a rejected delta is applied.
  EXPECT_EQ(svc_->AppliedSeq("lhr", kLhrEpoch), 0u);
}

using storage::RecordType;

StatusOr<RegisterResult> WriteSync(Keyspace* svc, RecordType type, const std::string& name,
                                   RegisterWrite w) {
  std::promise<StatusOr<RegisterResult>> p;
  svc->WriteRegister(type, name, std::move(w),
                     [&](StatusOr<RegisterResult> r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

RegisterWrite Put(std::string value, int64_t ttl_ms = 0) {
  RegisterWrite w;
  w.value = std::move(value);
  w.content_type = "text/plain";
  w.ttl_ms = ttl_ms;
  return w;
}

RegisterWrite Kind(RegisterWrite::Kind kind, int64_t ttl_ms = 0) {
  RegisterWrite w;
  w.kind = kind;
  w.ttl_ms = ttl_ms;
  return w;
}

std::optional<crdt::LwwRegister> Get(Keyspace* svc, RecordType type, const std::string& name) {
  auto r = svc->GetRegister(type, name);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : std::nullopt;
}

TEST_F(KeyspaceTest, KeysPutGetTouchDeleteAndSurviveRestart) {
  Open();
  auto w = WriteSync(svc_.get(), RecordType::kKey, "s/1", Put("alice", 1000));
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_FALSE(w->existed);
  EXPECT_EQ(w->written.origin, "iad");
  EXPECT_EQ(w->written.origin_seq, 1u);
  EXPECT_EQ(w->written.expires_at_ms, clock_.NowUnixMillis() + 1000);
  EXPECT_EQ(svc_->CommittedSeq(), 1u);
  auto got = Get(svc_.get(), RecordType::kKey, "s/1");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->value, "alice");
  EXPECT_EQ(got->content_type, "text/plain");
  // Touch slides the expiry and keeps the value.
  clock_.AdvanceMillis(900);
  auto t = WriteSync(svc_.get(), RecordType::kKey, "s/1", Kind(RegisterWrite::Kind::kTouch, 1000));
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->existed);
  EXPECT_GT(t->written.hlc, w->written.hlc);
  clock_.AdvanceMillis(900);
  got = Get(svc_.get(), RecordType::kKey, "s/1");
  ASSERT_TRUE(got);
  EXPECT_TRUE(crdt::IsLive(*got, clock_.NowUnixMillis()));
  EXPECT_EQ(got->value, "alice");
  // Expired: not live, and a touch cannot revive it.
  clock_.AdvanceMillis(100);
  EXPECT_FALSE(crdt::IsLive(*Get(svc_.get(), RecordType::kKey, "s/1"), clock_.NowUnixMillis()));
  EXPECT_EQ(WriteSync(svc_.get(), RecordType::kKey, "s/1", Kind(RegisterWrite::Kind::kTouch, 10))
                .status()
                .code(),
            StatusCode::kNotFound);
  // Delete writes a tombstone, live or not.
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kKey, "s/2", Put("bob")).ok());
  auto d = WriteSync(svc_.get(), RecordType::kKey, "s/2", Kind(RegisterWrite::Kind::kDelete));
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->existed);
  EXPECT_TRUE(Get(svc_.get(), RecordType::kKey, "s/2")->deleted);
  Open();
  EXPECT_TRUE(Get(svc_.get(), RecordType::kKey, "s/2")->deleted);
  EXPECT_EQ(Get(svc_.get(), RecordType::kKey, "s/1")->value, "alice");
  EXPECT_FALSE(Get(svc_.get(), RecordType::kKey, "nope"));
  // The sequence continues after a restart.
  auto again = WriteSync(svc_.get(), RecordType::kKey, "s/3", Put("c"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->written.origin_seq, svc_->CommittedSeq());
  EXPECT_GT(again->written.origin_seq, d->written.origin_seq);
}

TEST_F(KeyspaceTest, ConditionalWritesCheckTheLocalReplica) {
  Open();
  RegisterWrite create = Put("v1");
  create.if_none_match = true;
  auto a = WriteSync(svc_.get(), RecordType::kKey, "k", create);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(WriteSync(svc_.get(), RecordType::kKey, "k", create).status().code(),
            StatusCode::kFailedPrecondition);
  RegisterWrite update = Put("v2");
  update.if_match = ETagOf(a->written);
  auto b = WriteSync(svc_.get(), RecordType::kKey, "k", update);
  ASSERT_TRUE(b.ok());
  // The old ETag no longer matches.
  EXPECT_EQ(WriteSync(svc_.get(), RecordType::kKey, "k", update).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(Get(svc_.get(), RecordType::kKey, "k")->value, "v2");
  // After a delete, If-None-Match succeeds again.
  ASSERT_TRUE(
      WriteSync(svc_.get(), RecordType::kKey, "k", Kind(RegisterWrite::Kind::kDelete)).ok());
  EXPECT_TRUE(WriteSync(svc_.get(), RecordType::kKey, "k", create).ok());
}

TEST_F(KeyspaceTest, KeysReplicateThroughTheOneStream) {
  Open();
  ASSERT_TRUE(IncrementSync("c", 1).ok());                                     // seq 1
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kKey, "k1", Put("a")).ok());   // seq 2
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kKey, "k2", Put("b")).ok());   // seq 3
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kKey, "k1", Put("a2")).ok());  // seq 4
  // Cache entries stay regional: no sequence number.
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kCacheEntry, "img", Put("png")).ok());
  EXPECT_EQ(svc_->CommittedSeq(), 4u);
  std::vector<SlotUpdate> slots;
  std::vector<RegisterUpdate> regs;
  EXPECT_EQ(svc_->CollectOwnChanges(0, 100, &slots, false, &regs).covers, 4u);
  ASSERT_EQ(slots.size(), 1u);
  ASSERT_EQ(regs.size(), 2u);
  EXPECT_EQ(regs[0].name, "k2");
  EXPECT_EQ(regs[1].name, "k1");
  EXPECT_EQ(regs[1].reg.value, "a2");
  regs.clear();
  slots.clear();
  EXPECT_EQ(Got(svc_->CollectOwnChanges(2, 1, &slots, false, &regs)),
            std::tuple(End::kLimit, 2u, 3u));
  ASSERT_EQ(regs.size(), 1u);
  // A peer without registers still gets the counters and the sequence.
  slots.clear();
  EXPECT_EQ(svc_->CollectOwnChanges(0, 100, &slots).covers, 4u);
  EXPECT_EQ(slots.size(), 1u);

  // Remote writes merge by clock; an older one changes nothing.
  crdt::LwwRegister newer;
  newer.hlc = {clock_.NowUnixMillis() + 5, 0};
  newer.origin = "lhr";
  newer.origin_seq = 9;
  newer.value = "from-lhr";
  crdt::LwwRegister older = newer;
  older.hlc = {1, 0};
  older.value = "ancient";
  std::promise<Status> p;
  svc_->ApplyRemote(
      "lhr", kLhrEpoch, 9, {}, [&](Status s) { p.set_value(s); },
      {RegisterUpdate{RecordType::kKey, "k1", newer}, RegisterUpdate{RecordType::kKey, "k3", older},
       RegisterUpdate{RecordType::kKey, "k3", newer},
       RegisterUpdate{RecordType::kKey, "k1", older}});
  ASSERT_TRUE(p.get_future().get().ok());
  EXPECT_EQ(Get(svc_.get(), RecordType::kKey, "k1")->value, "from-lhr");
  EXPECT_EQ(Get(svc_.get(), RecordType::kKey, "k3")->value, "from-lhr");
  // A local write after it wins, even though the wall clock is behind the remote stamp.
  auto mine = WriteSync(svc_.get(), RecordType::kKey, "k1", Put("mine"));
  ASSERT_TRUE(mine.ok());
  EXPECT_GT(mine->written.hlc, newer.hlc);
  // k1's own index entry moved to the new write; k3 (never written here) is not in the stream.
  regs.clear();
  slots.clear();
  svc_->CollectOwnChanges(4, 100, &slots, false, &regs);
  ASSERT_EQ(regs.size(), 1u);
  EXPECT_EQ(regs[0].name, "k1");
  EXPECT_EQ(regs[0].reg.value, "mine");
}

TEST_F(KeyspaceTest, AChosenStrongWriteIsStoredOnceAndReplicates) {
  Open();
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kKey, "k", Put("old")).ok());  // seq 1
  auto apply = [&](const crdt::LwwRegister& chosen) {
    std::promise<StatusOr<RegisterResult>> p;
    svc_->ApplyChosenRegister("k", chosen,
                              [&](StatusOr<RegisterResult> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  };
  crdt::LwwRegister chosen;
  chosen.hlc = {clock_.NowUnixMillis() + 50, 3};
  chosen.origin = "iad";  // Proposed here: it takes its place in this region's sequence.
  chosen.value = "strong";
  auto stored = apply(chosen);
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  EXPECT_EQ(stored->written.origin_seq, 2u);
  EXPECT_EQ(ETagOf(stored->written), ETagOf(chosen));
  EXPECT_EQ(Get(svc_.get(), RecordType::kKey, "k")->value, "strong");
  // Applied again (a retry, or relayed back), nothing changes and no sequence is used.
  ASSERT_TRUE(apply(chosen).ok());
  EXPECT_EQ(svc_->CommittedSeq(), 2u);
  // Another voter's choice that an older write would lose to is not stored.
  crdt::LwwRegister stale = chosen;
  stale.hlc = {1, 0};
  stale.origin = "lhr";
  stale.value = "stale";
  ASSERT_TRUE(apply(stale).ok());
  EXPECT_EQ(Get(svc_.get(), RecordType::kKey, "k")->value, "strong");
  // The stored write ships to the peers, and a local write after it wins over it.
  std::vector<SlotUpdate> slots;
  std::vector<RegisterUpdate> regs;
  svc_->CollectOwnChanges(1, 100, &slots, false, &regs);
  ASSERT_EQ(regs.size(), 1u);
  EXPECT_EQ(regs[0].reg.value, "strong");
  auto mine = WriteSync(svc_.get(), RecordType::kKey, "k", Put("after"));
  ASSERT_TRUE(mine.ok());
  EXPECT_GT(mine->written.hlc, chosen.hlc);
  // A re-decided choice of another region is relayed under its origin, with no sequence of it.
  crdt::LwwRegister relayed;
  relayed.hlc = {clock_.NowUnixMillis() + 500, 0};
  relayed.origin = "lhr";
  relayed.value = "from-lhr";
  auto r = apply(relayed);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->written.origin, "lhr");
  EXPECT_EQ(r->written.origin_seq, 0u);
  EXPECT_EQ(svc_->CommittedSeq(), 4u);
}

TEST_F(KeyspaceTest, RemoteRegistersAreValidated) {
  Open();
  crdt::LwwRegister ok;
  ok.hlc = {5, 0};
  ok.origin = "lhr";
  auto apply = [&](std::vector<RegisterUpdate> regs) {
    std::promise<Status> p;
    svc_->ApplyRemote(
        "lhr", kLhrEpoch, 1, {}, [&](Status s) { p.set_value(s); }, std::move(regs));
    return p.get_future().get().code();
  };
  crdt::LwwRegister no_origin = ok;
  no_origin.origin.clear();
  crdt::LwwRegister big = ok;
  big.value.assign(kMaxValueBytes + 1, 'x');
  crdt::LwwRegister bad_type = ok;
  bad_type.content_type = "text/\n";
  EXPECT_EQ(apply({{RecordType::kKey, "", ok}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(apply({{RecordType::kKey, "a", no_origin}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(apply({{RecordType::kKey, "a", big}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(apply({{RecordType::kKey, "a", bad_type}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(apply({{RecordType::kCacheEntry, "a", ok}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(apply({{RecordType::kCounter, "a", ok}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(apply({{RecordType::kPurge, "xyz", ok}}), StatusCode::kInvalidArgument);
  EXPECT_EQ(apply({{RecordType::kKey, "fine", ok}, {RecordType::kKey, "a\x01", ok}}),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(Get(svc_.get(), RecordType::kKey, "fine"));  // Nothing of a rejected delta.
  EXPECT_EQ(apply({{RecordType::kKey, "fine", ok}}), StatusCode::kOk);
}

TEST_F(KeyspaceTest, ListingSkipsDeadKeysAndPaginates) {
  Open();
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kKey, "u/" + std::to_string(i), Put("v")).ok());
  }
  ASSERT_TRUE(
      WriteSync(svc_.get(), RecordType::kKey, "u/3", Kind(RegisterWrite::Kind::kDelete)).ok());
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kKey, "u/4", Put("short", 10)).ok());
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kKey, "v/0", Put("other")).ok());
  clock_.AdvanceMillis(10);
  std::vector<std::string> names;
  std::string after;
  int pages = 0;
  do {
    std::vector<ListedKey> page;
    std::string next;
    ASSERT_TRUE(svc_->ListRegisters(RecordType::kKey, "u/", after, 2, &page, &next).ok());
    for (auto& k : page) names.push_back(k.name);
    after = next;
    ++pages;
  } while (!after.empty() && pages < 10);
  EXPECT_EQ(names, (std::vector<std::string>{"u/0", "u/1", "u/2", "u/5", "u/6"}));
  EXPECT_EQ(pages, 3);
}

TEST_F(KeyspaceTest, PurgesRemoveCacheEntriesAndRefuseFillsThatBeganBefore) {
  Open();
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kCacheEntry, "img/a", Put("A")).ok());
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kCacheEntry, "img/b", Put("B")).ok());
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kCacheEntry, "css/c", Put("C")).ok());
  crdt::Hlc before = svc_->ClockNow();  // A fill of img/z begins.
  clock_.AdvanceMillis(1);
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kPurge, "*img/", Put("")).ok());
  EXPECT_FALSE(Get(svc_.get(), RecordType::kCacheEntry, "img/a"));
  EXPECT_FALSE(Get(svc_.get(), RecordType::kCacheEntry, "img/b"));
  EXPECT_TRUE(Get(svc_.get(), RecordType::kCacheEntry, "css/c"));
  RegisterWrite late = Put("stale");
  late.fill_started = before;
  EXPECT_EQ(WriteSync(svc_.get(), RecordType::kCacheEntry, "img/z", late).status().code(),
            StatusCode::kAborted);
  RegisterWrite fresh = Put("fresh");
  fresh.fill_started = svc_->ClockNow();
  EXPECT_TRUE(WriteSync(svc_.get(), RecordType::kCacheEntry, "img/z", fresh).ok());
  // Purges replicate, and survive a restart.
  std::vector<SlotUpdate> slots;
  std::vector<RegisterUpdate> regs;
  svc_->CollectOwnChanges(0, 100, &slots, false, &regs);
  ASSERT_EQ(regs.size(), 1u);
  EXPECT_EQ(regs[0].type, RecordType::kPurge);
  Open();
  EXPECT_EQ(WriteSync(svc_.get(), RecordType::kCacheEntry, "img/q", late).status().code(),
            StatusCode::kAborted);
  // An exact purge arriving from another region.
  crdt::LwwRegister purge;
  purge.hlc = svc_->ClockNow();
  purge.origin = "lhr";
  std::promise<Status> p;
  svc_->ApplyRemote("lhr", kLhrEpoch, 1, {}, [&](Status s) { p.set_value(s); },
                    {RegisterUpdate{RecordType::kPurge, "=css/c", purge}});
  ASSERT_TRUE(p.get_future().get().ok());
  EXPECT_FALSE(Get(svc_.get(), RecordType::kCacheEntry, "css/c"));
  EXPECT_TRUE(Get(svc_.get(), RecordType::kCacheEntry, "img/z"));
}

// Waits (bounded) until `done` holds.
template <typename F>
bool Eventually(F done) {
  for (int i = 0; i < 2000; ++i) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

TEST(SweepPauseTest, ARunWaitsLongEnoughToKeepTheSweepWithinItsReadRate) {
  using std::chrono::milliseconds;
  constexpr uint64_t kMiB = uint64_t{1} << 20;
  // No bound, or nothing read: the schedule's own pause.
  EXPECT_EQ(SweepPause(milliseconds(50), 100 * kMiB, 0), milliseconds(50));
  EXPECT_EQ(SweepPause(milliseconds(50), 0, 8 * kMiB), milliseconds(50));
  // 2 000 records of 100 bytes at 8 MiB/s: the 50 ms of the schedule already keep to it.
  EXPECT_EQ(SweepPause(milliseconds(50), 2000 * 100, 8 * kMiB), milliseconds(50));
  // 2 000 records of 1 KiB: 1 000/4 096 s, rounded up.
  EXPECT_EQ(SweepPause(milliseconds(50), 2000 * 1024, 8 * kMiB), milliseconds(245));
  // 2 000 records of 100 KiB: 195.3125 MiB take 24 414.0625 ms at 8 MiB/s, rounded up.
  EXPECT_EQ(SweepPause(milliseconds(50), 2000 * 100 * 1024, 8 * kMiB), milliseconds(24415));
  // The interval between passes stays when it is the longer wait.
  EXPECT_EQ(SweepPause(milliseconds(1000), 4 * kMiB, 8 * kMiB), milliseconds(1000));
  EXPECT_EQ(SweepPause(milliseconds(1000), 16 * kMiB, 8 * kMiB), milliseconds(2000));
  // A byte is paid for in whole milliseconds, so runs of a few bytes add up to the bound.
  EXPECT_EQ(SweepPause(milliseconds(0), 1, 1000), milliseconds(1));
  EXPECT_EQ(SweepPause(milliseconds(0), 1001, 1000), milliseconds(1001));
  // No overflow at the extremes: at most a day.
  EXPECT_EQ(SweepPause(milliseconds(0), UINT64_MAX, 1), milliseconds(86'400'000));
  EXPECT_EQ(SweepPause(milliseconds(0), UINT64_MAX, UINT64_MAX), milliseconds(1000));
}

TEST_F(KeyspaceTest, SweepCollectsDeadRecordsOnlyOnceStableEverywhere) {
  Open(Durability::kFsync, /*has_peers=*/true, std::chrono::milliseconds(5));
  ASSERT_TRUE(
      WriteSync(svc_.get(), RecordType::kKey, "session", Put(std::string(5000, 's'), 10)).ok());
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kKey, "gone", Put("x")).ok());
  ASSERT_TRUE(
      WriteSync(svc_.get(), RecordType::kKey, "gone", Kind(RegisterWrite::Kind::kDelete)).ok());
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kKey, "kept", Put("k")).ok());
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kCacheEntry, "c", Put("c", 10)).ok());
  clock_.AdvanceMillis(20);
  // Not yet acknowledged by every peer: the expired value loses its bytes, the tombstone stays,
  // the regional cache entry goes at once.
  ASSERT_TRUE(Eventually([&] { return svc_->sweep_stats().expired >= 1; }));
  ASSERT_TRUE(Eventually([&] { return !Get(svc_.get(), RecordType::kCacheEntry, "c"); }));
  auto session = Get(svc_.get(), RecordType::kKey, "session");
  ASSERT_TRUE(session);
  EXPECT_TRUE(session->value.empty());
  EXPECT_TRUE(Get(svc_.get(), RecordType::kKey, "gone"));
  EXPECT_EQ(svc_->sweep_stats().collected, 1u);  // The cache entry only.
  // The sweep counts what it reads: at least the 5 000 value bytes of "session".
  EXPECT_GE(metrics_->AddCounter("edgestate_sweep_read_bytes_total", "").value(), 5000u);
  // Every peer has everything: the dead records and their index entries go.
  svc_->SetStableSeq("iad", svc_->epoch(), svc_->CommittedSeq());
  ASSERT_TRUE(Eventually([&] { return svc_->sweep_stats().collected >= 3; }));
  EXPECT_FALSE(Get(svc_.get(), RecordType::kKey, "session"));
  EXPECT_FALSE(Get(svc_.get(), RecordType::kKey, "gone"));
  EXPECT_EQ(Get(svc_.get(), RecordType::kKey, "kept")->value, "k");
  std::vector<SlotUpdate> slots;
  std::vector<RegisterUpdate> regs;
  svc_->CollectOwnChanges(0, 100, &slots, false, &regs);
  ASSERT_EQ(regs.size(), 1u);
  EXPECT_EQ(regs[0].name, "kept");
  // A remote tombstone is collected once its origin says it is stable.
  crdt::LwwRegister t;
  t.hlc = svc_->ClockNow();
  t.origin = "lhr";
  t.origin_seq = 40;
  t.deleted = true;
  std::promise<Status> p;
  svc_->ApplyRemote("lhr", kLhrEpoch, 40, {}, [&](Status s) { p.set_value(s); },
                    {RegisterUpdate{RecordType::kKey, "remote-gone", t}});
  ASSERT_TRUE(p.get_future().get().ok());
  // Not by a position below its seq, nor by one of another life of lhr (whose seqs count
  // afresh): two complete sweep passes later it is still there.
  for (auto [epoch, seq] : {std::pair<uint32_t, uint64_t>{kLhrEpoch, 39},
                            std::pair<uint32_t, uint64_t>{kLhrEpoch + 1, 1000}}) {
    svc_->SetStableSeq("lhr", epoch, seq);
    const uint64_t passes = svc_->sweep_stats().passes;
    ASSERT_TRUE(Eventually([&] { return svc_->sweep_stats().passes >= passes + 2; }));
    EXPECT_TRUE(Get(svc_.get(), RecordType::kKey, "remote-gone")) << epoch << " " << seq;
  }
  svc_->SetStableSeq("lhr", kLhrEpoch, 40);
  ASSERT_TRUE(Eventually([&] { return !Get(svc_.get(), RecordType::kKey, "remote-gone"); }));
}

TEST_F(KeyspaceTest, TheLastPassCountsSurviveARestartAndADamagedRecordOfThemIsIgnored) {
  Open(Durability::kFsync, /*has_peers=*/true, std::chrono::milliseconds(5));
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kKey, "kept", Put("k")).ok());
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kKey, "expiring", Put("e", 10)).ok());
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kCacheEntry, "c", Put("c")).ok());
  clock_.AdvanceMillis(20);
  // "expiring" is dead, but kept as a tombstone until every peer has it.
  const std::string counted = R"("cache":{"live":1,"dead":0,)";
  const std::string keys = R"("keys":{"live":1,"dead":1,)";
  ASSERT_TRUE(Eventually([&] {
    const std::string s = svc_->StatusJson();
    return s.find(counted) != std::string::npos && s.find(keys) != std::string::npos;
  }));
  // Reopened without a sweep: the counts are the last pass's, not zero.
  Open(Durability::kFsync, /*has_peers=*/true);
  std::string s = svc_->StatusJson();
  EXPECT_NE(s.find(counted), std::string::npos) << s;
  EXPECT_NE(s.find(keys), std::string::npos) << s;
  EXPECT_NE(s.find(R"("sweep":{"passes":0,)"), std::string::npos) << s;
  // A damaged record of them: the node opens, counting from zero.
  for (std::string bad : {"", "1 0 1 1 0", "1 0 1 1 0 0 7", "1 0 1 1 0 -1", "1 0  1 1 0 0",
                          "1 0 1 1 0 0 ", "99999999999999999999 0 1 1 0 0"}) {
    svc_.reset();
    rocksdb::WriteBatch wb;
    wb.Put(storage::MetaKey("record-counts"), bad);
    ASSERT_TRUE(store_->Write(&wb, /*sync=*/true).ok());
    Open(Durability::kFsync, /*has_peers=*/true);
    s = svc_->StatusJson();
    EXPECT_NE(s.find(R"("cache":{"live":0,"dead":0,)"), std::string::npos) << bad << ": " << s;
    EXPECT_NE(s.find(R"("keys":{"live":0,"dead":0,)"), std::string::npos) << bad << ": " << s;
  }
  // The next pass replaces the damaged record.
  Open(Durability::kFsync, /*has_peers=*/true, std::chrono::milliseconds(5));
  ASSERT_TRUE(Eventually([&] { return svc_->sweep_stats().passes >= 1; }));
  Open(Durability::kFsync, /*has_peers=*/true);
  s = svc_->StatusJson();
  EXPECT_NE(s.find(counted), std::string::npos) << s;
  EXPECT_NE(s.find(keys), std::string::npos) << s;
}

TEST_F(KeyspaceTest, ADamagedRecordOfCountsIsReplacedAlsoWhenTheCountsAreZero) {
  Open();
  svc_.reset();
  rocksdb::WriteBatch wb;
  wb.Put(storage::MetaKey("record-counts"), "damaged");
  ASSERT_TRUE(store_->Write(&wb, /*sync=*/true).ok());
  Open(Durability::kFsync, /*has_peers=*/false, std::chrono::milliseconds(5));
  ASSERT_TRUE(Eventually([&] { return svc_->sweep_stats().passes >= 1; }));
  ASSERT_TRUE(Eventually([&] {
    StatusOr<std::string> stored = store_->Get(storage::MetaKey("record-counts"));
    return stored.ok() && *stored == "0 0 0 0 0 0";
  }));
}

// A strong delete chosen by another region's proposer and stored here (a re-decision) has no
// sequence of its origin: it is collected once the stream that carried it is stable, this
// region's own for the copy it stored, the sender's for a copy that arrived over a link.
TEST_F(KeyspaceTest, TombstonesWithoutAnOriginSequenceAreCollectedByTheirCarryingStream) {
  Open(Durability::kFsync, /*has_peers=*/true, std::chrono::milliseconds(5));
  crdt::LwwRegister chosen;
  chosen.hlc = svc_->ClockNow();
  chosen.origin = "lhr";
  chosen.deleted = true;
  std::promise<StatusOr<RegisterResult>> stored;
  svc_->ApplyChosenRegister("redecided", chosen,
                            [&](StatusOr<RegisterResult> r) { stored.set_value(std::move(r)); });
  ASSERT_TRUE(stored.get_future().get().ok());
  const uint64_t mine = svc_->CommittedSeq();
  // Arrived from sin's stream at its position 7: sin's stream is what makes it stable here.
  crdt::LwwRegister relayed = chosen;
  relayed.hlc.logical += 1;
  constexpr uint32_t kSinEpoch = 1'770'000'000;
  std::promise<Status> p;
  svc_->ApplyRemote("sin", kSinEpoch, 3, {}, [&](Status s) { p.set_value(s); },
                    {RegisterUpdate{RecordType::kKey, "relayed", relayed, 7}});
  ASSERT_TRUE(p.get_future().get().ok());
  // From a sender that does not say its position: kept (as before this rule existed).
  std::promise<Status> q;
  svc_->ApplyRemote("sin", kSinEpoch, 3, {}, [&](Status s) { q.set_value(s); },
                    {RegisterUpdate{RecordType::kKey, "unplaced", relayed, 0}});
  ASSERT_TRUE(q.get_future().get().ok());
  auto two_passes = [&] {
    const uint64_t passes = svc_->sweep_stats().passes;
    ASSERT_TRUE(Eventually([&] { return svc_->sweep_stats().passes >= passes + 2; }));
  };
  // Neither the origin's stability, nor a position below the carrier's, nor another life of it.
  svc_->SetStableSeq("lhr", kLhrEpoch, 1'000'000);
  svc_->SetStableSeq("iad", svc_->epoch(), mine - 1);
  svc_->SetStableSeq("sin", kSinEpoch, 6);
  two_passes();
  svc_->SetStableSeq("sin", kSinEpoch + 1, 100);
  two_passes();
  EXPECT_TRUE(Get(svc_.get(), RecordType::kKey, "redecided"));
  EXPECT_TRUE(Get(svc_.get(), RecordType::kKey, "relayed"));
  EXPECT_EQ(svc_->sweep_stats().collected, 0u);
  svc_->SetStableSeq("iad", svc_->epoch(), mine);
  ASSERT_TRUE(Eventually([&] { return !Get(svc_.get(), RecordType::kKey, "redecided"); }));
  EXPECT_TRUE(Get(svc_.get(), RecordType::kKey, "relayed"));
  svc_->SetStableSeq("sin", kSinEpoch, 7);
  ASSERT_TRUE(Eventually([&] { return !Get(svc_.get(), RecordType::kKey, "relayed"); }));
  two_passes();
  EXPECT_TRUE(Get(svc_.get(), RecordType::kKey, "unplaced"));
  EXPECT_EQ(svc_->sweep_stats().collected, 2u);
}

TEST_F(KeyspaceTest, AloneEveryOwnWriteIsStable) {
  Open(Durability::kFsync, /*has_peers=*/false, std::chrono::milliseconds(5));
  ASSERT_TRUE(WriteSync(svc_.get(), RecordType::kKey, "a", Put("x", 5)).ok());
  ASSERT_TRUE(
      WriteSync(svc_.get(), RecordType::kKey, "b", Kind(RegisterWrite::Kind::kDelete)).ok());
  clock_.AdvanceMillis(10);
  ASSERT_TRUE(Eventually([&] { return svc_->sweep_stats().collected >= 2; }));
  EXPECT_FALSE(Get(svc_.get(), RecordType::kKey, "a"));
  EXPECT_FALSE(Get(svc_.get(), RecordType::kKey, "b"));
  // Their index entries went with them, the newest included; the sequence still goes on.
  const uint64_t before = svc_->CommittedSeq();
  Open(Durability::kFsync, /*has_peers=*/false);
  EXPECT_EQ(svc_->CommittedSeq(), before);
  auto next = WriteSync(svc_.get(), RecordType::kKey, "c", Put("y"));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->written.origin_seq, before + 1);
}

TEST(ValidateKeyNameTest, Rules) {
  EXPECT_TRUE(ValidateKeyName(std::string(512, 'k')).ok());
  EXPECT_FALSE(ValidateKeyName(std::string(513, 'k')).ok());
  EXPECT_FALSE(ValidateKeyName("").ok());
  EXPECT_FALSE(ValidateKeyName("a\tb").ok());
  EXPECT_FALSE(ValidateKeyName("\xff").ok());
  EXPECT_TRUE(ValidatePurgePattern("*").ok());
  EXPECT_TRUE(ValidatePurgePattern("=a").ok());
  EXPECT_FALSE(ValidatePurgePattern("=").ok());
  EXPECT_FALSE(ValidatePurgePattern("a").ok());
  EXPECT_TRUE(ValidateContentType("application/json; charset=utf-8").ok());
  EXPECT_FALSE(ValidateContentType("a\x80").ok());
  EXPECT_FALSE(ValidateContentType(std::string(257, 'a')).ok());
}

}  // namespace
}  // namespace edgestate::service
