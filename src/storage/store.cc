#include "storage/store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <rocksdb/cache.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/table_properties_collectors.h>
#include <rocksdb/write_buffer_manager.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <utility>

#include "common/thread_name.h"
#include "storage/records.pb.h"

namespace edgestate::storage {
namespace {

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsCorruption()) {
    // RocksDB's message names the damaged file; say what to do about it.
    msg +=
        " -- the data directory is damaged and is not served from (docs/storage.md, "
        "Damaged storage, says what to do)";
  }
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

StatusOr<RecordType> ParseRecordType(char c) {
  switch (c) {
    case static_cast<char>(RecordType::kCounter):
    case static_cast<char>(RecordType::kKey):
    case static_cast<char>(RecordType::kCacheEntry):
    case static_cast<char>(RecordType::kPurge):
      return static_cast<RecordType>(c);
    default:
      return Status::InvalidArgument(
          fmt::format("unknown record type byte {:#04x}", static_cast<unsigned char>(c)));
  }
}

std::string RecordKey(RecordType type, std::string_view name) {
  std::string k;
  k.reserve(name.size() + 1);
  k.push_back(static_cast<char>(type));
  k.append(name);
  return k;
}

std::string ChangeKey(uint64_t seq) {
  std::string k(9, '\0');
  k[0] = kChangePrefix;
  for (int i = 0; i < 8; ++i) k[1 + i] = static_cast<char>((seq >> (56 - 8 * i)) & 0xff);
  return k;
}

std::string EncodeChange(RecordType type, std::string_view name) {
  return RecordKey(type, name);  // The same bytes: the type byte, then the name.
}

std::string EncodeRegister(const crdt::LwwRegister& reg, uint64_t local_seq,
                           const StreamPosition& relay) {
  pb::RegisterRecord rec;
  rec.set_wall_ms(reg.hlc.wall_ms);
  rec.set_logical(reg.hlc.logical);
  rec.set_origin(reg.origin);
  rec.set_origin_seq(reg.origin_seq);
  rec.set_origin_epoch(reg.origin_epoch);
  rec.set_deleted(reg.deleted);
  rec.set_expires_at_ms(reg.expires_at_ms);
  rec.set_content_type(reg.content_type);
  rec.set_value(reg.value);
  rec.set_local_seq(local_seq);
  if (!relay.region.empty()) {
    rec.set_relay_region(relay.region);
    rec.set_relay_epoch(relay.epoch);
    rec.set_relay_seq(relay.seq);
  }
  return rec.SerializeAsString();
}

std::string EncodeRegister(const StoredRegister& stored) {
  return EncodeRegister(stored.reg, stored.local_seq, stored.relay);
}

StatusOr<StoredRegister> DecodeRegister(std::string_view bytes) {
  pb::RegisterRecord rec;
  if (!rec.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Status::InvalidArgument("malformed register record");
  }
  if (rec.origin().empty()) return Status::InvalidArgument("register record without origin");
  if (rec.wall_ms() < 0 || rec.expires_at_ms() < 0) {
    return Status::InvalidArgument("register record with a negative time");
  }
  StoredRegister out;
  out.reg.hlc = {rec.wall_ms(), rec.logical()};
  out.reg.origin = std::move(*rec.mutable_origin());
  out.reg.origin_seq = rec.origin_seq();
  out.reg.origin_epoch = rec.origin_epoch();
  out.reg.deleted = rec.deleted();
  out.reg.expires_at_ms = rec.expires_at_ms();
  out.reg.content_type = std::move(*rec.mutable_content_type());
  out.reg.value = std::move(*rec.mutable_value());
  out.local_seq = rec.local_seq();
  if (!rec.relay_region().empty()) {
    out.relay = {std::move(*rec.mutable_relay_region()), rec.relay_epoch(), rec.relay_seq()};
  }
  return out;
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

// 16 shards of the record cache (each its own LRU and mutex): a record of up to a sixteenth of
// the cache is kept (a 1 MiB value from a budget of 43 MiB on).
constexpr int kRecordCacheShardBits = 4;

rocksdb::Options MakeOptions(const std::shared_ptr<rocksdb::Cache>& cache) {
  // Flushes and compactions run at a low CPU priority (nice 19; the pools are the process's):
  // on a saturated core they would otherwise take whole time slices from the I/O threads and
  // hold reads for milliseconds (docs/benchmarks.md, "Overload"). They still get every idle
  // cycle; when they fall behind, RocksDB's write stalls slow the writes, not the reads.
  rocksdb::Env* env = rocksdb::Env::Default();
  env->LowerThreadPoolCPUPriority(rocksdb::Env::Priority::LOW, rocksdb::CpuPriority::kLow);
  env->LowerThreadPoolCPUPriority(rocksdb::Env::Priority::HIGH, rocksdb::CpuPriority::kLow);
  rocksdb::Options options;
  options.create_if_missing = true;
  options.max_background_jobs = 2;
  options.compression = rocksdb::kLZ4Compression;
  options.bytes_per_sync = 1 << 20;
  options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  options.info_log = std::make_shared<SpdlogLogger>();
  options.keep_log_file_num = 3;
  // The table files are opened at start-up by one thread instead of a pool of 16 that is made
  // and joined on every open: a node must answer within milliseconds of exec (docs/storage.md).
  options.max_file_opening_threads = 1;
  // No WAL preallocation: a full disk fails the next write (and /health) at once instead of
  // after 64 MiB of preallocated WAL; measured: no change in fsync throughput on ext4.
  options.allow_fallocate = false;
  // Memory is bounded by the cache: memtables are charged to it, and so are index and filter
  // blocks (a node holds many times its memory in keys; docs/storage.md).
  options.write_buffer_size = 32 << 20;
  options.write_buffer_manager =
      std::make_shared<rocksdb::WriteBufferManager>(cache->GetCapacity() / 4, cache);
  // Files the sweep filled with deletions (expired sessions, collected tombstones) are compacted
  // soon after they are written, which gives their space back (docs/keys.md).
  options.table_properties_collector_factories.push_back(
      rocksdb::NewCompactOnDeletionCollectorFactory(/*sliding_window_size=*/16384,
                                                    /*deletion_trigger=*/4096,
                                                    /*deletion_ratio=*/0.3));
  rocksdb::BlockBasedTableOptions table;
  // The writer reads each key's record before it writes it (docs/keys.md); after a flush or a
  // compaction those reads miss the cache. 4 KiB data blocks make each miss a quarter of the
  // copying and checksumming of 16 KiB ones, and the blocks a flush writes go to the cache as
  // they are written: durable PUTs of 1 KiB values over 100 000 keys, +10 % (docs/benchmarks.md).
  table.block_size = 4 * 1024;
  table.prepopulate_block_cache =
      rocksdb::BlockBasedTableOptions::PrepopulateBlockCache::kFlushOnly;
  table.block_cache = cache;
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  // Partitioned index and filters: a point read needs the small top level of each (pinned) and
  // one 4 KiB partition, not a whole file's filter. A node answers its first reads within
  // milliseconds of exec whatever it holds (docs/storage.md); without partitions the first
  // read of each file loaded its whole filter (about 5 MB for two million records).
  table.index_type = rocksdb::BlockBasedTableOptions::IndexType::kTwoLevelIndexSearch;
  table.partition_filters = true;
  table.metadata_block_size = 4096;
  table.pin_top_level_index_and_filter = true;
  table.cache_index_and_filter_blocks_with_high_priority = true;
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return options;
}

Status OpenError(const rocksdb::Status& s, const std::string& dir) {
  if (s.IsIOError())
    return Status::Unavailable("cannot open store in " + dir + ": " + s.ToString());
  return FromRocks(s, "cannot open store in " + dir);
}

// The lock edgestate holds on a data directory (Store::Open).
constexpr const char* kLockFile = "edgestate.lock";

// RocksDB's read-only open of `dir`'s default column family. Not DB::OpenForReadOnly(options,
// ...): that one first tries the store as a fully compacted database (CompactedDBImpl) and, on
// a store with more than one level of files, does the whole recovery (MANIFEST, every table
// file's metadata) a second time as an ordinary read-only database: about 1 ms of each start
// with one million counters and keys (docs/storage.md, "Start-up").
rocksdb::Status OpenReadOnly(const rocksdb::Options& options, const std::string& dir,
                             rocksdb::DB** db) {
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions(options)}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::Status s =
      rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(options), dir, families, &handles, db);
  if (!s.ok()) return s;
  // The database keeps a handle of its default column family of its own (DefaultColumnFamily).
  for (rocksdb::ColumnFamilyHandle* h : handles) (*db)->DestroyColumnFamilyHandle(h);
  return s;
}

// True when a process other than this one holds RocksDB's lock on `dir` (LOCK, an fcntl lock
// taken by its read-write open): a node of an earlier release, which does not take
// edgestate.lock. False when the lock is free or the file does not exist.
bool RocksLockHeldElsewhere(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "LOCK").string();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct flock query = {};
  query.l_type = F_WRLCK;
  query.l_whence = SEEK_SET;
  bool held = ::fcntl(fd, F_GETLK, &query) != 0 || query.l_type != F_UNLCK;
  ::close(fd);  // This process holds no lock on LOCK yet: closing drops nothing.
  return held;
}

// Removes `dir`'s empty write-ahead logs. RocksDB 7.8 leaves one behind on every start that
// writes nothing before it stops (the log it creates at the read-write open is never obsoleted
// without a flush; fixed in RocksDB 8.3), and replays them all, read-only and read-write, at
// every start: a node restarted a thousand times (a crash loop, a probe that restarts it) would
// hold a thousand of them. An empty log holds no write, acknowledged or not, so removing it
// changes nothing RocksDB recovers. REQUIRES: edgestate.lock held, no RocksDB handle open on
// `dir`; skipped while another process holds RocksDB's own lock. Returns how many were removed.
size_t RemoveEmptyWals(const std::string& dir) {
  std::vector<std::filesystem::path> empty;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() <= 4 || !name.ends_with(".log") ||
        !std::all_of(name.begin(), name.end() - 4, [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    std::error_code file_ec;
    if (entry.is_regular_file(file_ec) && entry.file_size(file_ec) == 0 && !file_ec) {
      empty.push_back(entry.path());
    }
  }
  // The lock is looked at only when there is something to remove (most starts: nothing).
  if (empty.empty() || RocksLockHeldElsewhere(dir)) return 0;
  size_t removed = 0;
  for (const auto& path : empty) removed += std::filesystem::remove(path, ec) ? 1 : 0;
  return removed;
}

}  // namespace

StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& dir, StoreMetrics metrics,
                                             size_t cache_bytes,
                                             OpenFailedCallback on_open_failed) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::Unavailable("cannot create data directory " + dir + ": " + ec.message());
  // Three eighths of the budget hold records (Store::records_), the rest blocks and memtables.
  // Durable 1 KiB PUTs over 100 000 keys with the default budget: a quarter, 26.9 k/s; three
  // eighths, 29.8 k/s; a half, 30.0 k/s (docs/benchmarks.md).
  const size_t budget = std::max<size_t>(cache_bytes, 8u << 20);
  const size_t record_bytes = budget / 8 * 3;
  std::unique_ptr<Store> store(
      new Store(dir, metrics, rocksdb::NewLRUCache(budget - record_bytes),
                rocksdb::NewLRUCache(record_bytes, kRecordCacheShardBits)));
  // Locked before anything is read, so that a second node on the same directory is refused
  // before it serves a read (RocksDB's own lock comes with the read-write open only). A file of
  // its own: closing any descriptor of RocksDB's LOCK file would drop RocksDB's fcntl lock.
  const std::string lock = (std::filesystem::path(dir) / kLockFile).string();
  store->lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (store->lock_fd_ < 0 || ::flock(store->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return Status::Unavailable(fmt::format("cannot open store in {}: cannot lock {}: {}", dir, lock,
                                           std::strerror(errno)));
  }
  if (std::filesystem::exists(std::filesystem::path(dir) / "CURRENT", ec)) {
    if (size_t n = RemoveEmptyWals(dir); n > 0) {
      spdlog::info("removed {} empty write-ahead log(s) RocksDB left in {}", n, dir);
    }
    rocksdb::DB* raw = nullptr;
    if (OpenReadOnly(MakeOptions(store->cache_), dir, &raw).ok()) {
      store->read_only_.reset(raw);
      store->opener_ = std::thread([p = store.get(), cb = std::move(on_open_failed)]() mutable {
        NameThisThread("es-opener");
        p->RunOpener(std::move(cb));
      });
      return store;
    }
    // Whatever the read-only open could not do, the read-write open below reports or does.
  }
  rocksdb::DB* raw = nullptr;
  if (rocksdb::Status s = rocksdb::DB::Open(MakeOptions(store->cache_), dir, &raw); !s.ok()) {
    return OpenError(s, dir);
  }
  store->db_.reset(raw);
  store->writable_.store(true);
  store->open_status_ = Status::Ok();
  return store;
}

Store::Store(std::string dir, StoreMetrics metrics, std::shared_ptr<rocksdb::Cache> cache,
             std::shared_ptr<rocksdb::Cache> records)
    : dir_(std::move(dir)),
      metrics_(metrics),
      cache_(std::move(cache)),
      records_(std::move(records)) {}

void Store::OpenWritable(OpenFailedCallback on_open_failed) {
  rocksdb::DB* raw = nullptr;
  rocksdb::Status rs = rocksdb::DB::Open(MakeOptions(cache_), dir_, &raw);
  Status s = Status::Ok();
  if (!rs.ok()) {
    s = OpenError(rs, dir_);
  } else {
    db_.reset(raw);
    // Sequentially consistent with the readers' count (Reader): either a reader sees the
    // handle published, or this thread sees that reader counted below.
    writable_.store(true, std::memory_order_seq_cst);
  }
  {
    std::lock_guard lock(open_mu_);
    open_status_ = s;
  }
  open_cv_.notify_all();
  if (!s.ok()) {
    // Reads go on from the read-only handle until the node stops.
    spdlog::error("{}", s.ToString());
    if (on_open_failed) on_open_failed(s);
    return;
  }
  std::unique_lock lock(open_mu_);
  open_cv_.wait(lock, [this] { return read_only_users_.load(std::memory_order_seq_cst) == 0; });
  std::unique_ptr<rocksdb::DB> ro = std::move(read_only_);
  lock.unlock();
  ro.reset();  // Its open table files are released: what compactions delete frees its space.
}

Store::ReadHandle Store::Reader() {
  if (writable_.load(std::memory_order_acquire)) return ReadHandle(this, db_.get(), false);
  // Counted first, then checked again: see OpenWritable.
  read_only_users_.fetch_add(1, std::memory_order_seq_cst);
  if (writable_.load(std::memory_order_seq_cst)) {
    ReleaseReadOnly();
    return ReadHandle(this, db_.get(), false);
  }
  return ReadHandle(this, read_only_.get(), true);
}

void Store::ReleaseReadOnly() {
  if (read_only_users_.fetch_sub(1, std::memory_order_seq_cst) == 1) {
    std::lock_guard lock(open_mu_);
    open_cv_.notify_all();
  }
}

Store::ReadHandle::~ReadHandle() {
  if (read_only_) store_->ReleaseReadOnly();
}

void Store::StartWritableOpen(std::chrono::milliseconds after) {
  std::lock_guard lock(open_mu_);
  const auto at = after.count() <= 0 ? std::chrono::steady_clock::time_point::min()
                                     : std::chrono::steady_clock::now() + after;
  if (!open_at_ || at < *open_at_) open_at_ = at;
  open_cv_.notify_all();
}

void Store::RunOpener(OpenFailedCallback on_open_failed) {
  {
    std::unique_lock lock(open_mu_);
    while (!open_at_ || std::chrono::steady_clock::now() < *open_at_) {
      if (closing_) {  // Closed before anything needed the read-write handle.
        open_status_ = Status::Unavailable("the store closed before its read-write open");
        open_cv_.notify_all();
        return;
      }
      if (open_at_) {
        open_cv_.wait_until(lock, *open_at_);
      } else {
        open_cv_.wait(lock);
      }
    }
  }
  OpenWritable(std::move(on_open_failed));
}

Status Store::WaitWritable(OpenStart start) {
  std::unique_lock lock(open_mu_);
  if (!open_status_ && (start == OpenStart::kNow || !open_at_)) {
    open_at_ = std::chrono::steady_clock::time_point::min();
    open_cv_.notify_all();
  }
  open_cv_.wait(lock, [this] { return open_status_.has_value(); });
  return *open_status_;
}

std::optional<Status> Store::WritableResult() const {
  std::lock_guard lock(open_mu_);
  return open_status_;
}

StatusOr<rocksdb::DB*> Store::Writable() {
  if (writable_.load(std::memory_order_acquire)) return db_.get();
  if (Status s = WaitWritable(); !s.ok()) return s;
  return db_.get();
}

Store::~Store() {
  {
    std::lock_guard lock(open_mu_);
    closing_ = true;
  }
  open_cv_.notify_all();
  if (opener_.joinable()) opener_.join();
  if (db_ && !failed_.load()) {
    rocksdb::Status s = db_->FlushWAL(/*sync=*/true);
    if (!s.ok()) spdlog::warn("final WAL sync failed: {}", s.ToString());
    // The memtables go to table files now, so the next start has no WAL to replay.
    s = FlushMemtables();
    if (!s.ok()) spdlog::warn("final flush failed: {}", s.ToString());
    s = db_->Close();
    if (!s.ok()) spdlog::warn("closing the store failed: {}", s.ToString());
  }
  db_.reset();
  read_only_.reset();
  if (lock_fd_ >= 0) ::close(lock_fd_);  // After RocksDB's close: releases the flock.
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
  StatusOr<rocksdb::DB*> db = Writable();
  if (!db.ok()) return db.status();
  if (Status r = MaybeResume(); !r.ok()) return r;
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  auto start = std::chrono::steady_clock::now();
  rocksdb::Status s = (*db)->Write(wo, batch);
  if (sync && metrics_.sync_write_seconds)
    metrics_.sync_write_seconds->Observe(SecondsSince(start));
  UpdateRecords(*batch, s.ok());
  if (!s.ok()) {
    failed_.store(true);
    return FromRocks(s, "write failed");
  }
  return Status::Ok();
}

Status Store::SyncWal() {
  auto start = std::chrono::steady_clock::now();
  StatusOr<rocksdb::DB*> db = Writable();
  if (!db.ok()) return db.status();
  if (Status r = MaybeResume(); !r.ok()) return r;
  rocksdb::Status s = (*db)->FlushWAL(/*sync=*/true);
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
  ReadHandle db = Reader();
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro));
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
  rocksdb::Status s = Reader()->Get(rocksdb::ReadOptions(), CounterKey(name), &value);
  if (!s.ok()) return FromRocks(s, "get failed");
  return value;
}

StatusOr<std::string> Store::Get(std::string_view key) {
  const rocksdb::Slice k(key.data(), key.size());
  const bool cached = IsCachedRecord(key);
  uint64_t gen = 0;
  if (cached) {
    if (rocksdb::Cache::Handle* h = records_->Lookup(k)) {
      std::string value = *static_cast<const std::string*>(records_->Value(h));
      records_->Release(h);
      if (metrics_.record_cache_hits) metrics_.record_cache_hits->Inc();
      return value;
    }
    if (metrics_.record_cache_misses) metrics_.record_cache_misses->Inc();
    RecordStripe& stripe = StripeFor(key);
    std::lock_guard lock(stripe.mu);
    gen = stripe.gen;
  }
  std::string value;
  rocksdb::Status s = Reader()->Get(rocksdb::ReadOptions(), k, &value);
  if (!s.ok()) return FromRocks(s, "get failed");
  if (cached) FillRecord(key, value, gen);
  return value;
}

size_t Store::RecordCacheBytes() const { return records_->GetUsage(); }

bool Store::IsCachedRecord(std::string_view key) {
  if (key.empty()) return false;
  StatusOr<RecordType> type = ParseRecordType(key[0]);
  return type.ok() && *type != RecordType::kCounter;
}

Store::RecordStripe& Store::StripeFor(std::string_view key) {
  return stripes_[std::hash<std::string_view>()(key) % kRecordStripes];
}

namespace {

void DeleteRecord(const rocksdb::Slice& /*key*/, void* value) {
  delete static_cast<std::string*>(value);
}

// Inserts a copy of `value` under `key`, replacing what the cache held there. Inserted with a
// handle, since without one an entry the shard cannot take (its free space held by readers) is
// dropped and the previous value stays; with one it enters over capacity, and the release
// erases it at once when the shard is still over: either way no older value remains.
void InsertRecord(rocksdb::Cache* cache, const rocksdb::Slice& key, const rocksdb::Slice& value) {
  auto* copy = new std::string(value.data(), value.size());
  rocksdb::Cache::Handle* handle = nullptr;
  rocksdb::Status s =
      cache->Insert(key, copy, sizeof(std::string) + copy->capacity(), &DeleteRecord, &handle);
  if (s.ok()) {
    cache->Release(handle);
  } else {
    // Not expected without strict_capacity_limit. The value is the caller's to free.
    delete copy;
    cache->Erase(key);
  }
}

}  // namespace

void Store::FillRecord(std::string_view key, const std::string& value, uint64_t gen) {
  RecordStripe& stripe = StripeFor(key);
  std::lock_guard lock(stripe.mu);
  if (stripe.gen != gen) return;  // A write came after the read began: it may be older.
  InsertRecord(records_.get(), rocksdb::Slice(key.data(), key.size()), value);
}

void Store::SetRecord(std::string_view key, const rocksdb::Slice* value) {
  if (!IsCachedRecord(key)) return;
  RecordStripe& stripe = StripeFor(key);
  std::lock_guard lock(stripe.mu);
  ++stripe.gen;
  const rocksdb::Slice k(key.data(), key.size());
  if (value != nullptr) {
    InsertRecord(records_.get(), k, *value);
  } else {
    records_->Erase(k);
  }
}

void Store::EraseRecords(std::string_view begin, std::string_view end) {
  // After every stripe's generation moved, no fill that read RocksDB before the deletion can
  // enter; what entered before is found below.
  for (RecordStripe& stripe : stripes_) {
    std::lock_guard lock(stripe.mu);
    ++stripe.gen;
  }
  std::vector<std::string> doomed;
  records_->ApplyToAllEntries(
      [&](const rocksdb::Slice& key, void*, size_t, rocksdb::Cache::DeleterFn) {
        std::string_view k = key.ToStringView();
        if (k >= begin && k < end) doomed.emplace_back(k);
      },
      {});
  for (const std::string& k : doomed) records_->Erase(k);
}

// Hands each record of a written batch to the record cache (UpdateRecords).
class Store::RecordCacheUpdate : public rocksdb::WriteBatch::Handler {
 public:
  RecordCacheUpdate(Store* store, bool written) : store_(store), written_(written) {}

  rocksdb::Status PutCF(uint32_t, const rocksdb::Slice& key, const rocksdb::Slice& value) override {
    store_->SetRecord(key.ToStringView(), written_ ? &value : nullptr);
    return rocksdb::Status::OK();
  }
  rocksdb::Status DeleteCF(uint32_t, const rocksdb::Slice& key) override {
    store_->SetRecord(key.ToStringView(), nullptr);
    return rocksdb::Status::OK();
  }
  rocksdb::Status SingleDeleteCF(uint32_t, const rocksdb::Slice& key) override {
    store_->SetRecord(key.ToStringView(), nullptr);
    return rocksdb::Status::OK();
  }
  rocksdb::Status DeleteRangeCF(uint32_t, const rocksdb::Slice& begin,
                                const rocksdb::Slice& end) override {
    store_->EraseRecords(begin.ToStringView(), end.ToStringView());
    return rocksdb::Status::OK();
  }
  rocksdb::Status MergeCF(uint32_t, const rocksdb::Slice& key, const rocksdb::Slice&) override {
    store_->SetRecord(key.ToStringView(), nullptr);
    return rocksdb::Status::OK();
  }

 private:
  Store* store_;
  bool written_;
};

void Store::UpdateRecords(const rocksdb::WriteBatch& batch, bool written) {
  RecordCacheUpdate update(this, written);
  if (rocksdb::Status s = batch.Iterate(&update); !s.ok()) {
    // Not expected (the batch was built here); whatever it held may be stale in the cache.
    spdlog::error("record cache: cannot read a written batch ({}); emptying the cache",
                  s.ToString());
    EraseRecords("", "\xff");  // Every record type's byte is below 0xff.
  }
}

Status Store::Scan(RecordType type, std::string_view name_prefix, std::string_view after,
                   const std::function<bool(std::string_view, std::string_view)>& fn,
                   bool fill_cache) {
  rocksdb::ReadOptions ro;
  ro.total_order_seek = true;
  ro.fill_cache = fill_cache;
  ReadHandle db = Reader();
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro));
  const std::string prefix = RecordKey(type, name_prefix);
  const std::string after_key = RecordKey(type, after);
  const bool resume = !after.empty() && after_key > prefix;
  const rocksdb::Slice p(prefix);
  for (it->Seek(resume ? after_key : prefix); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key();
    if (!k.starts_with(p)) break;
    if (resume && k == rocksdb::Slice(after_key)) continue;  // Strictly after.
    rocksdb::Slice v = it->value();
    if (!fn(std::string_view(k.data() + 1, k.size() - 1), std::string_view(v.data(), v.size()))) {
      break;
    }
  }
  return FromRocks(it->status(), "scan failed");
}

Status Store::ScanRange(std::string_view from, std::string_view to,
                        const std::function<bool(std::string_view, std::string_view)>& fn) {
  rocksdb::ReadOptions ro;
  ro.total_order_seek = true;
  ro.fill_cache = false;
  ReadHandle db = Reader();
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro));
  const rocksdb::Slice end(to.data(), to.size());
  for (it->Seek(rocksdb::Slice(from.data(), from.size())); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key();
    if (k.compare(end) >= 0) break;
    rocksdb::Slice v = it->value();
    if (!fn(std::string_view(k.data(), k.size()), std::string_view(v.data(), v.size()))) break;
  }
  return FromRocks(it->status(), "scan failed");
}

uint64_t Store::ApproximateBytes() {
  uint64_t sst = 0, mem = 0;
  ReadHandle db = Reader();
  db->GetIntProperty("rocksdb.total-sst-files-size", &sst);
  db->GetIntProperty("rocksdb.cur-size-all-mem-tables", &mem);
  return sst + mem;
}

uint64_t Store::ApproximateRangeBytes(const std::string& from, const std::string& to) {
  rocksdb::Range range(from, to);
  uint64_t size = 0;
  rocksdb::SizeApproximationOptions options;
  options.include_memtables = true;
  options.include_files = true;
  ReadHandle db = Reader();
  if (!db->GetApproximateSizes(options, db->DefaultColumnFamily(), &range, 1, &size).ok()) {
    return 0;
  }
  return size;
}

Status Store::ForEachChange(uint64_t after_seq,
                            const std::function<bool(uint64_t, RecordType, std::string_view)>& fn) {
  rocksdb::ReadOptions ro;
  ro.total_order_seek = true;
  ReadHandle db = Reader();
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro));
  if (after_seq == UINT64_MAX) return Status::Ok();
  for (it->Seek(ChangeKey(after_seq + 1)); it->Valid(); it->Next()) {
    rocksdb::Slice k = it->key();
    if (k.empty() || k[0] != kChangePrefix) break;
    rocksdb::Slice v = it->value();
    if (k.size() != 9 || v.empty()) return Status::InvalidArgument("malformed change-index entry");
    uint64_t seq = 0;
    for (int i = 1; i <= 8; ++i) seq = seq << 8 | static_cast<unsigned char>(k[i]);
    StatusOr<RecordType> type = ParseRecordType(v[0]);
    if (!type.ok()) return type.status();
    if (!fn(seq, *type, std::string_view(v.data() + 1, v.size() - 1))) break;
  }
  return FromRocks(it->status(), "change-index scan failed");
}

StatusOr<uint64_t> Store::LastChangeSeq() {
  rocksdb::ReadOptions ro;
  ro.total_order_seek = true;
  ReadHandle db = Reader();
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro));
  it->SeekForPrev(ChangeKey(UINT64_MAX));
  if (it->Valid()) {
    rocksdb::Slice k = it->key();
    if (!k.empty() && k[0] == kChangePrefix) {
      if (k.size() != 9) return Status::InvalidArgument("malformed change-index entry");
      uint64_t seq = 0;
      for (int i = 1; i <= 8; ++i) seq = seq << 8 | static_cast<unsigned char>(k[i]);
      return seq;
    }
  }
  if (Status s = FromRocks(it->status(), "change-index scan failed"); !s.ok()) return s;
  return uint64_t{0};
}

StatusOr<std::string> Store::GetOrCreateMeta(std::string_view name, std::string_view initial) {
  return GetOrCreateMeta(name, [initial] { return std::string(initial); });
}

StatusOr<std::string> Store::GetOrCreateMeta(std::string_view name,
                                             const std::function<std::string()>& make_initial) {
  std::string value;
  rocksdb::Status s = Reader()->Get(rocksdb::ReadOptions(), MetaKey(name), &value);
  if (s.ok()) return value;
  if (!s.IsNotFound()) return FromRocks(s, "get failed");
  value = make_initial();
  rocksdb::WriteBatch wb;
  wb.Put(MetaKey(name), value);
  if (Status w = Write(&wb, /*sync=*/true); !w.ok()) return w;
  return value;
}

uint64_t Store::EstimateNumKeys() {
  uint64_t n = 0;
  if (!Reader()->GetIntProperty("rocksdb.estimate-num-keys", &n)) return 0;
  return n;
}

rocksdb::Status Store::FlushMemtables() {
  rocksdb::FlushOptions fo;
  fo.wait = true;
  return db_->Flush(fo);
}

Status Store::CompactAll() {
  if (Status w = WaitWritable(); !w.ok()) return w;
  if (rocksdb::Status s = FlushMemtables(); !s.ok()) return FromRocks(s, "flush failed");
  rocksdb::CompactRangeOptions co;
  co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForceOptimized;
  return FromRocks(db_->CompactRange(co, nullptr, nullptr), "compaction failed");
}

}  // namespace edgestate::storage
