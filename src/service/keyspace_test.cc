#include "service/keyspace.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <limits>
#include <thread>

#include "common/test_dir.h"

namespace edgestate::service {
namespace {

class KeyspaceTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = FreshTestDir(); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Opens store + service; the previous pair (if any) is closed first.
  void Open(Durability d = Durability::kFsync) {
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
    auto svc = Keyspace::Open(store_.get(), o, metrics_.get());
    ASSERT_TRUE(svc.ok()) << svc.status().ToString();
    svc_ = std::move(svc).value();
  }

  StatusOr<CounterValue> IncrementSync(const std::string& name, int64_t delta) {
    std::promise<StatusOr<CounterValue>> p;
    svc_->Increment(name, delta, [&](StatusOr<CounterValue> r) { p.set_value(std::move(r)); });
    return p.get_future().get();
  }

  std::filesystem::path dir_;
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

TEST_F(KeyspaceTest, UnwrittenCounterReadsZero) {
  Open();
  CounterValue v = svc_->Read("nope");
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
  EXPECT_EQ(svc_->Read("a").value, -3);
  EXPECT_EQ(svc_->size(), 1u);
}

TEST_F(KeyspaceTest, OverflowIsRejectedAndChangesNothing) {
  Open();
  ASSERT_TRUE(IncrementSync("a", std::numeric_limits<int64_t>::max()).ok());
  auto r = IncrementSync("a", 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(svc_->Read("a").value, std::numeric_limits<int64_t>::max());
  Open();  // And nothing of the rejected write reached the disk.
  EXPECT_EQ(svc_->Read("a").value, std::numeric_limits<int64_t>::max());
}

TEST_F(KeyspaceTest, AcknowledgedIncrementsSurviveReopen) {
  Open();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(IncrementSync("x", 2).ok());
  ASSERT_TRUE(IncrementSync("y", -1).ok());
  Open();
  EXPECT_EQ(svc_->Read("x").value, 20);
  EXPECT_EQ(svc_->Read("y").value, -1);
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
  EXPECT_EQ(svc_->Read("odd").value + svc_->Read("even").value, kThreads * kEach);
  std::string m = metrics_->Render();
  // With 8 concurrent writers some batches must carry more than one write.
  EXPECT_NE(m.find("edgestate_commit_batch_size_count"), std::string::npos);
  Open();
  EXPECT_EQ(svc_->Read("odd").value + svc_->Read("even").value, kThreads * kEach);
}

TEST_F(KeyspaceTest, AsyncModeAcknowledgesAndSyncs) {
  Open(Durability::kAsync);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(IncrementSync("a", 1).ok());
  Open(Durability::kAsync);
  EXPECT_EQ(svc_->Read("a").value, 50);
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
  EXPECT_EQ(svc_->Read("a").value, 1);
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

TEST_F(KeyspaceTest, OwnChangesAreCollectedOncePerCounterInSeqOrder) {
  Open();
  ASSERT_TRUE(IncrementSync("a", 1).ok());  // seq 1
  ASSERT_TRUE(IncrementSync("b", 2).ok());  // seq 2
  ASSERT_TRUE(IncrementSync("a", 3).ok());  // seq 3: a's entry moves from 1 to 3
  EXPECT_EQ(svc_->CommittedSeq(), 3u);
  std::vector<SlotUpdate> out;
  EXPECT_EQ(svc_->CollectOwnChanges(0, 100, &out), 3u);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].name, "b");
  EXPECT_EQ(out[1].name, "a");
  EXPECT_EQ(out[1].slot.inc, 4u);
  EXPECT_EQ(out[1].slot.version, 3u);
  out.clear();
  EXPECT_EQ(svc_->CollectOwnChanges(2, 100, &out), 3u);
  ASSERT_EQ(out.size(), 1u);
  out.clear();
  EXPECT_EQ(svc_->CollectOwnChanges(3, 100, &out), 3u);
  EXPECT_TRUE(out.empty());
  out.clear();
  EXPECT_EQ(svc_->CollectOwnChanges(0, 1, &out), 2u);  // Truncated: covers only what it took.
  ASSERT_EQ(out.size(), 1u);
  // The sequence and the change log survive a restart.
  Open();
  EXPECT_EQ(svc_->CommittedSeq(), 3u);
  out.clear();
  EXPECT_EQ(svc_->CollectOwnChanges(0, 100, &out), 3u);
  EXPECT_EQ(out.size(), 2u);
  ASSERT_TRUE(IncrementSync("c", 1).ok());
  EXPECT_EQ(svc_->CommittedSeq(), 4u);
}

TEST_F(KeyspaceTest, RemoteSlotsMergeIdempotentlyInAnyOrder) {
  Open();
  ASSERT_TRUE(IncrementSync("x", 5).ok());
  ASSERT_TRUE(ApplySync(svc_.get(), "lhr", 7, {Slot("x", 10, 1, 7), Slot("y", 3, 0, 6)}).ok());
  EXPECT_EQ(svc_->Read("x").value, 14);
  EXPECT_EQ(svc_->Read("y").value, 3);
  EXPECT_EQ(svc_->AppliedSeq("lhr", kLhrEpoch), 7u);
  // Duplicate delivery.
  ASSERT_TRUE(ApplySync(svc_.get(), "lhr", 7, {Slot("x", 10, 1, 7), Slot("y", 3, 0, 6)}).ok());
  EXPECT_EQ(svc_->Read("x").value, 14);
  // An older state arriving late changes nothing, and never lowers the applied position.
  ASSERT_TRUE(ApplySync(svc_.get(), "lhr", 3, {Slot("x", 4, 0, 3)}).ok());
  EXPECT_EQ(svc_->Read("x").value, 14);
  EXPECT_EQ(svc_->AppliedSeq("lhr", kLhrEpoch), 7u);
  // Remote writes never enter this node's own change log.
  std::vector<SlotUpdate> out;
  svc_->CollectOwnChanges(0, 100, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].slot.inc, 5u);
  // All of it is durable.
  Open();
  EXPECT_EQ(svc_->Read("x").value, 14);
  EXPECT_EQ(svc_->Read("y").value, 3);
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

TEST_F(KeyspaceTest, RemoteSlotsForOwnRegionOrBadNamesAreRejected) {
  Open();
  EXPECT_EQ(ApplySync(svc_.get(), "iad", 1, {Slot("x", 1, 0, 1)}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplySync(svc_.get(), "lhr", 1, {Slot("ok", 1, 0, 1), Slot("bad\n", 1, 0, 1)}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(svc_->Read("ok").value, 0);  // Nothing of a rejected delta is applied.
  EXPECT_EQ(svc_->AppliedSeq("lhr", kLhrEpoch), 0u);
}

}  // namespace
}  // namespace edgestate::service
