#include "storage/store.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <random>
#include <thread>

#include "common/test_dir.h"

namespace edgestate::storage {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = FreshTestDir(); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

crdt::PnCounter Counter(int64_t v) {
  crdt::PnCounter c;
  EXPECT_TRUE(c.Add("iad", v, 123).ok());
  return c;
}

TEST_F(StoreTest, CodecRoundTrips) {
  crdt::PnCounter c = Counter(5);
  ASSERT_TRUE(c.Add("lhr", -9, 456).ok());
  StatusOr<crdt::PnCounter> back = DecodeCounter(EncodeCounter(c));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, c);
  EXPECT_EQ(back->Value(), -4);
}

TEST_F(StoreTest, DecodeRejectsGarbageWithoutCrashing) {
  std::mt19937 rng(7);
  int rejected = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string junk(rng() % 64, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    if (!DecodeCounter(junk).ok()) ++rejected;
  }
  EXPECT_GT(rejected, 0);
  EXPECT_FALSE(DecodeCounter("\xff\xff\xff").ok());
}

TEST_F(StoreTest, WritesSurviveReopen) {
  {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    rocksdb::WriteBatch wb;
    wb.Put(CounterKey("a"), EncodeCounter(Counter(1)));
    wb.Put(CounterKey("b"), EncodeCounter(Counter(2)));
    wb.Put(MetaKey("probe"), "x");
    ASSERT_TRUE((*store)->Write(&wb, /*sync=*/true).ok());
  }
  auto store = Store::Open(dir_.string());
  ASSERT_TRUE(store.ok());
  std::vector<std::pair<std::string, int64_t>> seen;
  Status st = (*store)->ForEachCounter([&](std::string_view name, std::string_view bytes) {
    auto c = DecodeCounter(bytes);
    if (!c.ok()) return c.status();
    seen.emplace_back(std::string(name), c->Value());
    return Status::Ok();
  });
  ASSERT_TRUE(st.ok());
  ASSERT_EQ(seen.size(), 2u);  // Meta keys are not counters.
  EXPECT_EQ(seen[0], (std::pair<std::string, int64_t>{"a", 1}));
  EXPECT_EQ(seen[1], (std::pair<std::string, int64_t>{"b", 2}));
  EXPECT_EQ((*store)->GetCounter("zzz").status().code(), StatusCode::kNotFound);
}

TEST_F(StoreTest, RegisterCodecRoundTripsAndRejectsGarbage) {
  crdt::LwwRegister r;
  r.hlc = {1764520000123, 7};
  r.origin = "lhr";
  r.origin_seq = 42;
  r.expires_at_ms = 1764520060123;
  r.content_type = "application/octet-stream";
  r.value = std::string("\0\xff binary", 9);
  StatusOr<StoredRegister> back = DecodeRegister(EncodeRegister(r, 17));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->reg, r);
  EXPECT_EQ(back->local_seq, 17u);
  EXPECT_EQ(back->relay, StreamPosition{});
  const StreamPosition via{"fra", 3, 99};
  back = DecodeRegister(EncodeRegister(r, 17, via));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->reg, r);
  EXPECT_EQ(back->relay, via);
  EXPECT_FALSE(DecodeRegister("\xff\xff\xff").ok());
  EXPECT_FALSE(DecodeRegister("").ok());  // No origin.
  crdt::LwwRegister negative = r;
  negative.expires_at_ms = -5;
  EXPECT_FALSE(DecodeRegister(EncodeRegister(negative)).ok());
  std::mt19937 rng(11);
  for (int i = 0; i < 2000; ++i) {
    std::string junk(rng() % 64, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    (void)DecodeRegister(junk);  // Never crashes.
  }
}

TEST_F(StoreTest, ChangeIndexIsInSeqOrderAndScansResume) {
  auto store = Store::Open(dir_.string());
  ASSERT_TRUE(store.ok());
  EXPECT_EQ(*(*store)->LastChangeSeq(), 0u);
  rocksdb::WriteBatch wb;
  // Seqs whose little-endian or decimal order differs from numeric order.
  for (uint64_t seq : {1ull, 255ull, 256ull, 70000ull, 1ull << 40}) {
    wb.Put(ChangeKey(seq), EncodeChange(RecordType::kKey, "k" + std::to_string(seq)));
  }
  wb.Put(RecordKey(RecordType::kKey, "user/1"), "a");
  wb.Put(RecordKey(RecordType::kKey, "user/2"), "b");
  wb.Put(RecordKey(RecordType::kKey, "user/3"), "c");
  wb.Put(RecordKey(RecordType::kKey, "v"), "d");
  ASSERT_TRUE((*store)->Write(&wb, true).ok());
  EXPECT_EQ(*(*store)->LastChangeSeq(), 1ull << 40);
  std::vector<uint64_t> seqs;
  ASSERT_TRUE((*store)
                  ->ForEachChange(1,
                                  [&](uint64_t seq, RecordType t, std::string_view name) {
                                    EXPECT_EQ(t, RecordType::kKey);
                                    EXPECT_EQ(name, "k" + std::to_string(seq));
                                    seqs.push_back(seq);
                                    return seqs.size() < 3;
                                  })
                  .ok());
  EXPECT_EQ(seqs, (std::vector<uint64_t>{255, 256, 70000}));
  std::vector<std::string> names;
  auto collect = [&](std::string_view name, std::string_view) {
    names.emplace_back(name);
    return true;
  };
  ASSERT_TRUE((*store)->Scan(RecordType::kKey, "user/", "", collect).ok());
  EXPECT_EQ(names, (std::vector<std::string>{"user/1", "user/2", "user/3"}));
  names.clear();
  ASSERT_TRUE((*store)->Scan(RecordType::kKey, "user/", "user/1", collect).ok());
  EXPECT_EQ(names, (std::vector<std::string>{"user/2", "user/3"}));
  names.clear();
  ASSERT_TRUE((*store)->Scan(RecordType::kKey, "", "user/3", collect).ok());
  EXPECT_EQ(names, (std::vector<std::string>{"v"}));
  EXPECT_EQ(*(*store)->Get(RecordKey(RecordType::kKey, "v")), "d");
  EXPECT_EQ((*store)->Get("kmissing").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(ParseRecordType('z').ok());
  EXPECT_EQ(*ParseRecordType('k'), RecordType::kKey);
}

TEST_F(StoreTest, SecondOpenOfSameDirIsRefused) {
  for (bool existing : {false, true}) {
    SCOPED_TRACE(existing ? "an existing database" : "a new one");
    auto a = Store::Open(dir_.string());
    ASSERT_TRUE(a.ok());
    auto b = Store::Open(dir_.string());
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.status().code(), StatusCode::kUnavailable);
    // The refused open released nothing of the first one's locks.
    auto c = Store::Open(dir_.string());
    EXPECT_FALSE(c.ok());
    rocksdb::WriteBatch wb;
    wb.Put(MetaKey("probe"), "x");
    EXPECT_TRUE((*a)->Write(&wb, /*sync=*/true).ok());
  }
}

std::string MustGet(Store* store, std::string_view key) {
  StatusOr<std::string> v = store->Get(key);
  EXPECT_TRUE(v.ok()) << v.status().ToString();
  return v.ok() ? *v : "";
}

void WriteMeta(Store* store, std::string_view name, std::string_view value) {
  rocksdb::WriteBatch wb;
  wb.Put(MetaKey(name), std::string(value));
  Status s = store->Write(&wb, /*sync=*/true);
  ASSERT_TRUE(s.ok()) << s.ToString();
}

TEST_F(StoreTest, AReopenedStoreReadsAtOnceAndItsWritesAreReadBack) {
  {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok());
    EXPECT_TRUE((*store)->WaitWritable().ok());  // A new directory: at once.
    WriteMeta(store->get(), "a", "1");
  }
  for (int round = 0; round < 3; ++round) {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    // Served from the read-only handle while the read-write open runs (or from the latter).
    EXPECT_EQ(MustGet(store->get(), MetaKey("a")), "1");
    // A write waits for the read-write handle; every read after it sees it.
    WriteMeta(store->get(), "b", std::to_string(round));
    EXPECT_EQ((*store)->WritableResult(), std::optional<Status>(Status::Ok()));
    EXPECT_EQ(MustGet(store->get(), MetaKey("b")), std::to_string(round));
    EXPECT_EQ(MustGet(store->get(), MetaKey("a")), "1");
  }
}

// Point reads of records go through the record cache. Whatever mix of overwrites, deletions,
// deleted ranges, flushes, compactions and evictions (a budget of 8 MiB against values of up to
// 200 KiB) came before, every read answers what a model of the writes says, the second read of a
// key (a cache hit) as the first, and so do the reads after a reopen, on both handles.
TEST_F(StoreTest, TheRecordCacheNeverChangesAnAnswer) {
  auto store = Store::Open(dir_.string(), {}, 8 << 20);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE((*store)->WaitWritable().ok());
  std::map<std::string, std::string> model;
  std::mt19937 rng(20261202);
  auto key = [](int k) { return RecordKey(RecordType::kKey, "key-" + std::to_string(k)); };
  // True when a read of key k answers what the model says; `when` names the moment.
  auto answers_model = [&](int k, const std::string& when) -> bool {
    StatusOr<std::string> got = (*store)->Get(key(k));
    auto want = model.find(key(k));
    if (want == model.end()) {
      EXPECT_EQ(got.status().code(), StatusCode::kNotFound) << when << " key " << k;
      return got.status().code() == StatusCode::kNotFound;
    }
    EXPECT_TRUE(got.ok()) << when << " key " << k << ": " << got.status().ToString();
    EXPECT_EQ(got.ok() ? *got : "", want->second) << when << " key " << k;
    return got.ok() && *got == want->second;
  };
  for (int step = 0; step < 3000; ++step) {
    const int k = static_cast<int>(rng() % 64);
    switch (rng() % 10) {
      case 0:
      case 1:
      case 2: {
        // One or two records in a batch, now and then a large one.
        rocksdb::WriteBatch wb;
        for (int n = 0; n < 1 + static_cast<int>(rng() % 2); ++n) {
          const int kk = n == 0 ? k : static_cast<int>(rng() % 64);
          const size_t size = rng() % 8 == 0 ? 200 << 10 : rng() % 200;
          std::string value = fmt::format("v{}-{}-{}", step, n, std::string(size, 'x'));
          wb.Put(key(kk), value);
          model[key(kk)] = value;
        }
        ASSERT_TRUE((*store)->Write(&wb, false).ok());
        break;
      }
      case 3: {
        rocksdb::WriteBatch wb;
        if (rng() % 4 == 0) {
          // A range: key-1, key-10 .. key-19 (names sort as strings).
          const std::string begin = key(1), end = key(2);
          wb.DeleteRange(begin, end);
          for (auto it = model.lower_bound(begin); it != model.end() && it->first < end;) {
            it = model.erase(it);
          }
        } else {
          wb.Delete(key(k));
          model.erase(key(k));
        }
        ASSERT_TRUE((*store)->Write(&wb, false).ok());
        break;
      }
      case 4:
        if (rng() % 20 == 0) {
          ASSERT_TRUE((*store)->CompactAll().ok());
        }
        break;
      default:
        for (int twice = 0; twice < 2; ++twice) {
          ASSERT_TRUE(answers_model(k, fmt::format("step {} read {}", step, twice)));
        }
    }
  }
  // And after a reopen, from table files only, on both handles.
  store->reset();
  store = Store::Open(dir_.string());
  ASSERT_TRUE(store.ok());
  for (int pass = 0; pass < 3; ++pass) {
    if (pass == 2) {
      ASSERT_TRUE((*store)->WaitWritable().ok());
    }
    for (int k = 0; k < 64; ++k) answers_model(k, fmt::format("after the reopen, pass {}", pass));
  }
}

// Reads repeated on the read-only handle that serves a reopened store's first reads answer alike,
// the later ones from the record cache the first one filled. (RocksDB 7.8's read-only handle
// answers NotFound on a hit of its own row cache; the store gives it none.)
TEST_F(StoreTest, TheReadOnlyHandleAnswersRepeatedReadsAlike) {
  const std::string key = RecordKey(RecordType::kKey, "a");
  {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok());
    WriteMeta(store->get(), "a", "1");
    rocksdb::WriteBatch wb;
    wb.Put(key, "2");
    ASSERT_TRUE((*store)->Write(&wb, true).ok());
  }
  auto store = Store::Open(dir_.string(), {}, 8 << 20);
  ASSERT_TRUE(store.ok());
  for (int i = 0; i < 3; ++i) {
    StatusOr<std::string> got = (*store)->Get(MetaKey("a"));
    ASSERT_TRUE(got.ok()) << i << ": " << got.status().ToString();
    EXPECT_EQ(*got, "1");
    got = (*store)->Get(key);
    ASSERT_TRUE(got.ok()) << i << ": " << got.status().ToString();
    EXPECT_EQ(*got, "2");
  }
  EXPECT_GT((*store)->RecordCacheBytes(), 0u);
  // Still the read-only handle: nothing asked for the read-write one yet.
  EXPECT_EQ((*store)->WritableResult(), std::nullopt);
}

// Readers that miss the record cache fill it with what they read, while the writer overwrites,
// deletes and evicts (64 records of 100 KiB against a cache of 3 MiB, so reads keep missing).
// A fill whose read predates a write must not enter after that write: at the end of each of 40
// rounds of 50 writes, every record reads as its last write, twice.
TEST_F(StoreTest, AFillNeverOutlivesALaterWrite) {
  edgestate::Counter misses;
  StoreMetrics metrics;
  metrics.record_cache_misses = &misses;
  auto store = Store::Open(dir_.string(), metrics, 8 << 20);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->WaitWritable().ok());
  auto key = [](int k) { return RecordKey(RecordType::kKey, "big-" + std::to_string(k)); };
  std::map<int, std::optional<std::string>> model;
  std::mt19937 rng(20261203);
  const std::string pad(100 << 10, 'p');
  for (int round = 0; round < 40; ++round) {
    std::atomic<bool> done{false};
    std::vector<std::thread> readers;
    for (int r = 0; r < 3; ++r) {
      readers.emplace_back([&, r] {
        std::mt19937 mine(round * 3 + r);
        while (!done.load()) (void)(*store)->Get(key(static_cast<int>(mine() % 64)));
      });
    }
    for (int step = 0; step < 50; ++step) {
      const int k = static_cast<int>(rng() % 64);
      rocksdb::WriteBatch wb;
      if (rng() % 5 == 0) {
        wb.Delete(key(k));
        model[k] = std::nullopt;
      } else {
        std::string value = fmt::format("{:03}/{:02}:", round, step) + pad;
        wb.Put(key(k), value);
        model[k] = std::move(value);
      }
      ASSERT_TRUE((*store)->Write(&wb, false).ok());
    }
    done.store(true);
    for (std::thread& t : readers) t.join();
    for (const auto& [k, want] : model) {
      for (int twice = 0; twice < 2; ++twice) {
        StatusOr<std::string> got = (*store)->Get(key(k));
        if (!want) {
          ASSERT_EQ(got.status().code(), StatusCode::kNotFound)
              << "round " << round << " key " << k;
        } else {
          ASSERT_TRUE(got.ok()) << "key " << k << ": " << got.status().ToString();
          ASSERT_EQ(got->substr(0, 7), want->substr(0, 7)) << "round " << round << " key " << k;
        }
      }
    }
  }
  // Reads missed (the cache holds under half of the records), so the fills were exercised.
  EXPECT_GT(misses.value(), 1000u);
}

TEST_F(StoreTest, AScanBegunBeforeTheReadWriteOpenOutlivesIt) {
  {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok());
    rocksdb::WriteBatch wb;
    wb.Put(CounterKey("a"), EncodeCounter(Counter(1)));
    wb.Put(CounterKey("b"), EncodeCounter(Counter(2)));
    ASSERT_TRUE((*store)->Write(&wb, /*sync=*/true).ok());
  }
  auto store = Store::Open(dir_.string());
  ASSERT_TRUE(store.ok());
  std::promise<void> in_scan, go_on;
  std::vector<std::string> seen;
  std::thread scanner([&] {
    Status s = (*store)->ForEachCounter([&](std::string_view name, std::string_view) {
      if (seen.empty()) {
        in_scan.set_value();
        go_on.get_future().wait();
      }
      seen.emplace_back(name);
      return Status::Ok();
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
  });
  in_scan.get_future().wait();
  // The read-write open (started by this wait: nothing asked for it before) ends and writes go
  // on while the scan, on the read-only handle, which must stay open until it is done, is held.
  EXPECT_TRUE((*store)->WaitWritable().ok());
  rocksdb::WriteBatch wb;
  wb.Put(CounterKey("c"), EncodeCounter(Counter(3)));
  ASSERT_TRUE((*store)->Write(&wb, /*sync=*/true).ok());
  EXPECT_TRUE((*store)->GetCounter("c").ok());
  go_on.set_value();
  scanner.join();
  ASSERT_GE(seen.size(), 2u);
  EXPECT_EQ(seen[0], "a");
  EXPECT_EQ(seen[1], "b");
}

TEST_F(StoreTest, TheReadWriteOpenStartsWhenAskedOrWhenAWriteNeedsIt) {
  {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok());
    WriteMeta(store->get(), "a", "1");
  }
  {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok());
    // Nothing asked for it: the start is served from the read-only handle alone (a read-write
    // open of this small directory ends well within this wait when it runs).
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_FALSE((*store)->WritableResult().has_value());
    EXPECT_EQ(MustGet(store->get(), MetaKey("a")), "1");
    (*store)->StartWritableOpen();
    (*store)->StartWritableOpen();  // Idempotent.
    EXPECT_TRUE((*store)->WaitWritable().ok());
    EXPECT_EQ((*store)->WritableResult(), std::optional<Status>(Status::Ok()));
  }
  // A scheduled start: the loader's wait waits for it, a write does not (it would wait an hour).
  {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok());
    const auto t0 = std::chrono::steady_clock::now();
    (*store)->StartWritableOpen(std::chrono::milliseconds(200));
    EXPECT_TRUE((*store)->WaitWritable(Store::OpenStart::kAsScheduled).ok());
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(200));
  }
  {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok());
    (*store)->StartWritableOpen(std::chrono::hours(1));
    WriteMeta(store->get(), "c", "3");
  }
  // A write starts it itself; a store closed before anything started it closes cleanly.
  {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok());
    WriteMeta(store->get(), "b", "2");
  }
  {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok());
  }
  auto store = Store::Open(dir_.string());
  ASSERT_TRUE(store.ok());
  EXPECT_EQ(MustGet(store->get(), MetaKey("b")), "2");
}

size_t WriteAheadLogs(const std::filesystem::path& dir) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    n += e.path().extension() == ".log" ? 1 : 0;
  }
  return n;
}

TEST_F(StoreTest, RestartsThatWriteNothingLeaveNoEmptyWriteAheadLogsBehind) {
  {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok());
    WriteMeta(store->get(), "a", "1");
  }
  // Each read-write open makes a new log; RocksDB 7.8 keeps the one a start that wrote nothing
  // leaves, and replays all of them at every start.
  for (int round = 0; round < 5; ++round) {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->WaitWritable().ok());
  }
  EXPECT_LE(WriteAheadLogs(dir_), 1u);
  auto store = Store::Open(dir_.string());
  ASSERT_TRUE(store.ok());
  EXPECT_EQ(MustGet(store->get(), MetaKey("a")), "1");
}

TEST_F(StoreTest, AWriteAheadLogThatHoldsWritesIsReplayedNotRemoved) {
  const std::filesystem::path image = dir_.string() + "-crash-image";
  {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok());
    WriteMeta(store->get(), "a", "1");  // Synced to the log, in no table file yet.
    // The directory as a crash at this moment leaves it (the close below flushes the memtable).
    std::filesystem::copy(dir_, image, std::filesystem::copy_options::recursive);
  }
  ASSERT_GE(WriteAheadLogs(image), 1u);
  {
    auto store = Store::Open(image.string());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_EQ(MustGet(store->get(), MetaKey("a")), "1");
    ASSERT_TRUE((*store)->WaitWritable().ok());
    EXPECT_EQ(MustGet(store->get(), MetaKey("a")), "1");
  }
  std::filesystem::remove_all(image);
}

TEST_F(StoreTest, WhenTheReadWriteOpenFailsReadsGoOnAndWritesFailWithItsError) {
  {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok());
    WriteMeta(store->get(), "a", "1");
  }
  // Another holder of RocksDB's lock (as a node of a release before edgestate.lock would be).
  rocksdb::DB* raw = nullptr;
  rocksdb::Options o;
  ASSERT_TRUE(rocksdb::DB::Open(o, dir_.string(), &raw).ok());
  std::unique_ptr<rocksdb::DB> holder(raw);

  std::promise<Status> reported;
  auto store =
      Store::Open(dir_.string(), {}, 8u << 20, [&](const Status& s) { reported.set_value(s); });
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Status opened = (*store)->WaitWritable();
  EXPECT_EQ(opened.code(), StatusCode::kUnavailable) << opened.ToString();
  EXPECT_NE(opened.message().find("lock"), std::string::npos) << opened.ToString();
  EXPECT_EQ(reported.get_future().get(), opened);
  EXPECT_EQ((*store)->WritableResult(), std::optional<Status>(opened));
  EXPECT_EQ(MustGet(store->get(), MetaKey("a")), "1");
  rocksdb::WriteBatch wb;
  wb.Put(MetaKey("b"), "2");
  EXPECT_EQ((*store)->Write(&wb, /*sync=*/true), opened);
  EXPECT_EQ((*store)->Get(MetaKey("b")).status().code(), StatusCode::kNotFound);
}

TEST_F(StoreTest, AnExistingDirectoryThatCannotBeOpenedIsRefusedAndLeftUnlocked) {
  {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok());
    WriteMeta(store->get(), "a", "1");
  }
  const std::filesystem::path current = dir_ / "CURRENT";
  std::string saved;
  {
    std::ifstream in(current);
    std::getline(in, saved);
  }
  { std::ofstream(current, std::ios::trunc) << "MANIFEST-999999\n"; }
  // Neither the read-only open nor the read-write one it falls back to can read it.
  auto bad = Store::Open(dir_.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("cannot open store in"), std::string::npos)
      << bad.status().ToString();
  // The refused open holds no lock: once repaired, the directory opens.
  { std::ofstream(current, std::ios::trunc) << saved << "\n"; }
  auto store = Store::Open(dir_.string());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(MustGet(store->get(), MetaKey("a")), "1");
}

TEST_F(StoreTest, UnusableDirectoryIsAnError) {
  std::filesystem::create_directories(dir_);
  std::filesystem::path file = dir_ / "file";
  { std::ofstream(file) << "x"; }
  auto s = Store::Open((file / "sub").string());
  ASSERT_FALSE(s.ok());
}

}  // namespace
}  // namespace edgestate::storage
