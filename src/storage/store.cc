#include "storage/store.h"

#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <filesystem>

#include "storage/records.pb.h"

namespace edgestate::storage {
namespace {

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsCorruption() || s.IsInvalidArgument() || s.IsNotSupported()) {
    return Status::InvalidArgument(std::move(msg));
  }
  if (s.IsNotFound()) return Status::NotFound(std::move(msg));
  return Status::Unavailable(std::move(msg));
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

std::string CounterKey(std::string_view name) {
  std::string k;
  k.reserve(name.size() + 1);
  k.push_back(kCounterPrefix);
  k.append(name);
  return k;
}

std::string StrongKey(std::string_view name) {
  std::string k;
  k.reserve(name.size() + 1);
  k.push_back(kStrongPrefix);
  k.append(name);
  return k;
}

std::string MetaKey(std::string_view name) {
  std::string k;
  k.push_back(kMetaPrefix);
  k.append(name);
  return k;
}

std::string AppliedKey(std::string_view origin) {
  std::string k;
  k.push_back(kAppliedPrefix);
  k.append(origin);
  return k;
}

std::string EncodeCounter(const crdt::PnCounter& counter) {
  pb::CounterRecord rec;
  for (const auto& [origin, slot] : counter.slots()) {
    pb::SlotRecord* s = rec.add_slots();
    s->set_origin(origin);
    s->set_inc(slot.inc);
    s->set_dec(slot.dec);
    s->set_version(slot.version);
    s->set_updated_at_ms(slot.updated_at_ms);
  }
  return rec.SerializeAsString();
}

StatusOr<crdt::PnCounter> DecodeCounter(std::string_view bytes) {
  pb::CounterRecord rec;
  if (!rec.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Status::InvalidArgument("malformed counter record");
  }
  crdt::PnCounter c;
  for (const pb::SlotRecord& s : rec.slots()) {
    if (s.origin().empty()) return Status::InvalidArgument("counter record slot without origin");
    c.SetSlot(s.origin(), crdt::Slot{s.inc(), s.dec(), s.version(), s.updated_at_ms()});
  }
  return c;
}

namespace {

// RocksDB's diagnostics go to the process log, not to a LOG file in the data directory: a
// full disk must fail writes cleanly, and Debian's RocksDB asserts when its file logger hits
// a write error.
class SpdlogLogger final : public rocksdb::Logger {
 public:
  SpdlogLogger() : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel()) return;
    char buf[1024];
    vsnprintf(buf, sizeof(buf), format, ap);
    if (level >= rocksdb::InfoLogLevel::ERROR_LEVEL) {
      spdlog::error("rocksdb: {}", buf);
    } else {
      spdlog::warn("rocksdb: {}", buf);
    }
  }
};

rocksdb::Options MakeOptions() {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.max_background_jobs = 2;
  options.compression = rocksdb::kLZ4Compression;
  options.bytes_per_sync = 1 << 20;
  options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  options.info_log = std::make_shared<SpdlogLogger>();
  options.keep_log_file_num = 3;
  // No WAL preallocation: a full disk fails the next write (and /health) at once instead of
  // after 64 MiB of preallocated WAL; measured: no change in fsync throughput on ext4.
  options.allow_fallocate = false;
  rocksdb::BlockBasedTableOptions table;
  table.block_size = 16 * 1024;
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return options;
}

}  // namespace

StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& dir, StoreMetrics metrics) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::Unavailable("cannot create data directory " + dir + ": " + ec.message());
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(MakeOptions(), dir, &raw);
  if (!s.ok()) {
    if (s.IsIOError())
      return Status::Unavailable("cannot open store in " + dir + ": " + s.ToString());
    return FromRocks(s, "cannot open store in " + dir);
  }
  return std::unique_ptr<Store>(new Store(std::unique_ptr<rocksdb::DB>(raw), dir, metrics));
}

Store::Store(std::unique_ptr<rocksdb::DB> db, std::string dir, StoreMetrics metrics)
    : dir_(std::move(dir)), db_(std::move(db)), metrics_(metrics) {}

Store::~Store() {
  if (db_ && !failed_.load()) {
    rocksdb::Status s = db_->FlushWAL(/*sync=*/true);
    if (!s.ok()) spdlog::warn("final WAL sync failed: {}", s.ToString());
    s = db_->Close();
    if (!s.ok()) spdlog::warn("closing the store failed: {}", s.ToString());
  }
}

Status Store::MaybeResume() {
  if (!failed_.load()) return Status::Ok();
  rocksdb::Status s = db_->Resume();
  if (!s.ok()) return FromRocks(s, "store is in an error state and could not resume");
  spdlog::info("store resumed after an I/O error");
  failed_.store(false);
  return Status::Ok();
}

Status Store::Write(rocksdb::WriteBatch* batch, bool sync) {
  if (Status r = MaybeResume(); !r.ok()) return r;
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  auto start = std::chrono::steady_clock::now();
  rocksdb::Status s = db_->Write(wo, batch);
  if (sync && metrics_.sync_write_seconds)
    metrics_.sync_write_seconds->Observe(SecondsSince(start));
  if (!s.ok()) {
    failed_.store(true);
    return FromRocks(s, "write failed");
  }
  return Status::Ok();
}

Status Store::SyncWal() {
  auto start = std::chrono::steady_clock::now();
  if (Status r = MaybeResume(); !r.ok()) return r;
  rocksdb::Status s = db_->FlushWAL(/*sync=*/true);
  if (metrics_.wal_sync_seconds) metrics_.wal_sync_seconds->Observe(SecondsSince(start));
  if (!s.ok()) {
    failed_.store(true);
    return FromRocks(s, "WAL sync failed");
  }
  return Status::Ok();
}

Status Store::ForEachCounter(const std::function<Status(std::string_view, std::string_view)>& fn) {
  return ForEachWithPrefix(kCounterPrefix, fn);
}

Status Store::ForEachWithPrefix(
    char prefix_byte, const std::function<Status(std::string_view, std::string_view)>& fn) {
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  ro.readahead_size = 4 << 20;
  ro.total_order_seek = true;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
  const std::string prefix(1, prefix_byte);
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key();
    if (k.empty() || k[0] != prefix_byte) break;
    rocksdb::Slice v = it->value();
    if (Status st =
            fn(std::string_view(k.data() + 1, k.size() - 1), std::string_view(v.data(), v.size()));
        !st.ok()) {
      return st;
    }
  }
  return FromRocks(it->status(), "scan failed");
}

std::string EncodeApplied(uint64_t seq, uint32_t epoch) {
  return std::to_string(seq) + " " + std::to_string(epoch);
}

Status Store::ForEachApplied(
    const std::function<Status(std::string_view, uint64_t, uint32_t)>& fn) {
  return ForEachWithPrefix(kAppliedPrefix, [&fn](std::string_view origin, std::string_view v) {
    uint64_t seq = 0;
    uint32_t epoch = 0;
    const char* end = v.data() + v.size();
    auto [ptr, ec] = std::from_chars(v.data(), end, seq);
    if (ec == std::errc() && ptr != end && *ptr == ' ') {
      auto r = std::from_chars(ptr + 1, end, epoch);
      ptr = r.ec == std::errc() && r.ptr != ptr + 1 ? r.ptr : nullptr;
    }
    if (ec != std::errc() || ptr != end) {
      return Status::InvalidArgument("malformed applied-sequence record for " +
                                     std::string(origin));
    }
    return fn(origin, seq, epoch);
  });
}

StatusOr<std::string> Store::GetCounter(std::string_view name) {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), CounterKey(name), &value);
  if (!s.ok()) return FromRocks(s, "get failed");
  return value;
}

StatusOr<std::string> Store::GetOrCreateMeta(std::string_view name, std::string_view initial) {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), MetaKey(name), &value);
  if (s.ok()) return value;
  if (!s.IsNotFound()) return FromRocks(s, "get failed");
  rocksdb::WriteBatch wb;
  wb.Put(MetaKey(name), rocksdb::Slice(initial.data(), initial.size()));
  if (Status w = Write(&wb, /*sync=*/true); !w.ok()) return w;
  return std::string(initial);
}

uint64_t Store::EstimateNumKeys() {
  uint64_t n = 0;
  if (!db_->GetIntProperty("rocksdb.estimate-num-keys", &n)) return 0;
  return n;
}

}  // namespace edgestate::storage
