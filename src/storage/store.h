// Store: the node's durable state in RocksDB.
//
// Key layout (docs/storage.md): one keyspace of typed records, the type being the key's first
// byte (RecordType): "c" + name -> counter (CounterRecord), "k" + name -> key (RegisterRecord),
// "g" + name -> cache entry (RegisterRecord, this region only), "p" + pattern -> cache purge
// (RegisterRecord). Beside them: "o" + 8-byte big-endian seq -> type byte + name, the change
// index (each record's latest own write; replication reads it in order); "m" + name -> node
// metadata (the health probe; "epoch", this data directory's epoch); "s" + counter name -> the
// strong-consistency acceptor's state for that counter (docs/strong.md); "v" + origin ->
// applied position of a peer region, "SEQ EPOCH" in decimal (docs/replication.md; records
// written before epochs existed hold "SEQ" and read as epoch 0). Values are whole CRDT states,
// so the last Put of a key is its complete truth and replaying the WAL is idempotent.
//
// Durability: Write(batch, /*sync=*/true) returns OK only after the batch is in the WAL and
// the WAL is fdatasync'ed. Write(batch, false) returns after the WAL append (in the OS page
// cache: survives a process crash, not a power loss) and SyncWal() makes it stable.
//
// Thread-safety: all methods are safe from any thread (RocksDB is internally synchronized);
// edgestate calls Write only from its single writer thread (docs/threading.md).
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "common/metrics.h"
#include "common/status.h"
#include "crdt/lww_register.h"
#include "crdt/pn_counter.h"

namespace edgestate::storage {

// The record types of the keyspace; the value is the key's first byte. docs/storage.md says how
// a new type is added.
enum class RecordType : char {
  kCounter = 'c',     // crdt::PnCounter, in memory and on disk, replicated.
  kKey = 'k',         // crdt::LwwRegister, on disk (hot ones in the block cache), replicated.
  kCacheEntry = 'g',  // crdt::LwwRegister, on disk, never replicated (fills are regional).
  kPurge = 'p',       // crdt::LwwRegister naming a cache key or prefix, replicated.
};
// True for the types whose own writes get sequence numbers and travel to other regions.
constexpr bool IsReplicated(RecordType t) { return t != RecordType::kCacheEntry; }
// Parses a type byte. InvalidArgument for an unknown one.
StatusOr<RecordType> ParseRecordType(char c);

inline constexpr char kCounterPrefix = 'c';
inline constexpr char kChangePrefix = 'o';
inline constexpr char kMetaPrefix = 'm';
inline constexpr char kAppliedPrefix = 'v';
inline constexpr char kStrongPrefix = 's';  // "s" + counter name -> strong::AcceptorRecord.

std::string CounterKey(std::string_view name);
std::string RecordKey(RecordType type, std::string_view name);
// "o" + seq in 8 big-endian bytes (key order is seq order) -> type byte + name.
std::string ChangeKey(uint64_t seq);
std::string EncodeChange(RecordType type, std::string_view name);
std::string MetaKey(std::string_view name);
// "s" + counter name -> that counter's strong acceptor record.
std::string StrongKey(std::string_view name);
// "v" + origin -> "SEQ EPOCH": every write of `origin`'s life EPOCH with seq <= SEQ is applied.
std::string AppliedKey(std::string_view origin);
std::string EncodeApplied(uint64_t seq, uint32_t epoch);

// Serializes a counter's full CRDT state.
std::string EncodeCounter(const crdt::PnCounter& counter);
// Parses what EncodeCounter wrote. InvalidArgument on malformed bytes (never crashes).
StatusOr<crdt::PnCounter> DecodeCounter(std::string_view bytes);

// A position in one region's replication stream: its write `seq` of its life `epoch`.
struct StreamPosition {
  std::string region;  // Empty: none.
  uint32_t epoch = 0;
  uint64_t seq = 0;

  friend bool operator==(const StreamPosition&, const StreamPosition&) = default;
};

// A register as stored: the CRDT state, this node's latest own sequence number for it, and for
// a write with no sequence number of its origin (reg.origin_seq == 0) the stream position that
// brought it here: once every region applied that stream to there, every region holds this
// write or a later one (docs/storage.md, "Collecting dead records"). Only `reg` is ever sent.
struct StoredRegister {
  crdt::LwwRegister reg;
  uint64_t local_seq = 0;
  StreamPosition relay = {};
};
std::string EncodeRegister(const crdt::LwwRegister& reg, uint64_t local_seq = 0,
                           const StreamPosition& relay = {});
std::string EncodeRegister(const StoredRegister& stored);
// Parses what EncodeRegister wrote (or a peer sent). InvalidArgument on malformed bytes.
StatusOr<StoredRegister> DecodeRegister(std::string_view bytes);

struct StoreMetrics {
  Histogram* sync_write_seconds = nullptr;  // Latency of synced batch writes (WAL + fdatasync).
  Histogram* wal_sync_seconds = nullptr;    // Latency of SyncWal (async mode).
  Counter* record_cache_hits = nullptr;     // Point reads of records the record cache answered.
  Counter* record_cache_misses = nullptr;   // Point reads of records that went to RocksDB.
};

// Thread-safety: every method may be called from any thread; Write, SyncWal and the creation in
// GetOrCreateMeta are not called concurrently with each other (the writer thread, or the start
// before it writes): MaybeResume relies on it.
class Store {
 public:
  // Called once, on a thread of the store's, when the read-write open of a data directory that
  // Open returned before it ended failed. Must not block and must not call into the store.
  using OpenFailedCallback = std::function<void(const Status&)>;

  // Opens (creating if missing) the database in `dir`. Unavailable when the directory cannot be
  // created or locked (e.g. another process owns it), InvalidArgument when it is not a database.
  // `cache_bytes` sizes RocksDB's block cache, which holds the hot records read from disk
  // (keys and cache entries; counters are in memory) together with index and filter blocks.
  //
  // A directory that already holds a database is locked, opened read-only (nothing written,
  // nothing synced: about a third of the time of a read-write open) and returned at once, so a
  // node serves reads while the read-write open runs on a thread of its own (StartWritableOpen).
  // Reads use the read-only handle until the read-write one is open; every write waits for it
  // (WaitWritable), so no read ever misses a write. When that open fails, writes fail with its
  // error and `on_open_failed` is called. A new directory is opened read-write before Open
  // returns.
  static StatusOr<std::unique_ptr<Store>> Open(const std::string& dir, StoreMetrics metrics = {},
                                               size_t cache_bytes = 256u << 20,
                                               OpenFailedCallback on_open_failed = nullptr);
  ~Store();

  // Starts the read-write open of a directory Open opened read-only `after` from now, or at once
  // when a write needs it sooner (WaitWritable); an earlier call's earlier start stands. Until
  // then the open waits: its work and syncs would share the node's core with the first answers
  // (docs/storage.md, "Start-up"). Nothing to do after a new directory's open. The open runs on
  // a thread Open made, at Open's caller's priority whoever calls this.
  void StartWritableOpen(std::chrono::milliseconds after = std::chrono::milliseconds(0));
  // Blocks until the read-write open has ended and returns how (OK at once after a new
  // directory's open). kNow (writes) starts it at once if it has not begun; kAsScheduled (the
  // loader, so that its long scan never holds the read-only handle) waits for the start
  // StartWritableOpen set, and starts it at once when none was set.
  enum class OpenStart { kNow, kAsScheduled };
  Status WaitWritable(OpenStart start = OpenStart::kNow);
  // How the read-write open ended, without waiting; nullopt while it runs.
  std::optional<Status> WritableResult() const;

  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Applies `batch` atomically. Unavailable on I/O errors (disk full, read-only filesystem);
  // after such an error the next Write or SyncWal first asks RocksDB to resume. A failed write
  // may or may not be on disk after a restart; it is never acknowledged. Readers see a batch
  // only once Write has made it durable as `sync` asked (the WAL is written before the
  // memtable).
  Status Write(rocksdb::WriteBatch* batch, bool sync);
  // Makes every earlier Write durable.
  Status SyncWal();

  // Calls fn(name, value) for every counter in key order. Stops at and returns the first
  // error from the iterator. `fn` must not call back into the store.
  Status ForEachCounter(const std::function<Status(std::string_view, std::string_view)>& fn);
  // Calls fn(key without the prefix byte, value) for every record whose key starts with
  // `prefix`, in key order; same rules as ForEachCounter.
  Status ForEachWithPrefix(char prefix,
                           const std::function<Status(std::string_view, std::string_view)>& fn);
  // Calls fn(origin, seq, epoch) for every applied-position record. InvalidArgument on a
  // malformed one.
  Status ForEachApplied(const std::function<Status(std::string_view, uint64_t, uint32_t)>& fn);
  // The metadata record "m" + name; when absent, stores (and syncs) `initial` first. Used for
  // values fixed at a data directory's creation: its epoch (docs/consistency.md) and the
  // secret of a node without a cluster secret. Unavailable on I/O errors.
  StatusOr<std::string> GetOrCreateMeta(std::string_view name, std::string_view initial);
  // The same, calling `make_initial` only when the record is absent (an expensive value).
  StatusOr<std::string> GetOrCreateMeta(std::string_view name,
                                        const std::function<std::string()>& make_initial);
  // Returns the stored bytes of one counter; NotFound when absent.
  StatusOr<std::string> GetCounter(std::string_view name);
  // Returns the stored bytes under `key` (a whole key, prefix byte included); NotFound when
  // absent, Unavailable on I/O errors. Records of the register types (keys, cache entries,
  // purges) come from the record cache when it holds them (records_).
  StatusOr<std::string> Get(std::string_view key);
  // Bytes the record cache holds, its own bookkeeping included.
  size_t RecordCacheBytes() const;
  // Calls fn(name, value) for the records of `type` whose name starts with `name_prefix` and
  // is greater than `after` (when not empty), in name order, until fn returns false. The same
  // iterator errors as ForEachWithPrefix.
  Status Scan(RecordType type, std::string_view name_prefix, std::string_view after,
              const std::function<bool(std::string_view, std::string_view)>& fn,
              bool fill_cache = true);
  // Calls fn(whole key, value) for records with keys in [from, to) in key order until fn
  // returns false; without filling the block cache (background scans).
  Status ScanRange(std::string_view from, std::string_view to,
                   const std::function<bool(std::string_view, std::string_view)>& fn);
  // Bytes on disk (SST files) and in memtables: what the data directory holds.
  uint64_t ApproximateBytes();
  // RocksDB's estimate of the bytes keys in [from, to) take on disk and in memtables.
  uint64_t ApproximateRangeBytes(const std::string& from, const std::string& to);
  // Calls fn(seq, type, name) for the change-index entries with seq > after_seq in seq order,
  // until fn returns false. InvalidArgument on a malformed entry.
  Status ForEachChange(uint64_t after_seq,
                       const std::function<bool(uint64_t, RecordType, std::string_view)>& fn);
  // The highest seq in the change index; 0 when empty.
  StatusOr<uint64_t> LastChangeSeq();

  // RocksDB's estimate of the number of keys (for reserving memory at start-up).
  uint64_t EstimateNumKeys();

  // Flushes the memtables and compacts every table file into the last level, waiting for it
  // (tools: a filled data directory as a node that has run a while leaves it).
  Status CompactAll();

 private:
  // The database to read from for as long as it lives: the read-write handle once it is open,
  // before that the read-only one, which is closed only after the last of its readers is done.
  class ReadHandle {
   public:
    ~ReadHandle();
    ReadHandle(const ReadHandle&) = delete;
    ReadHandle& operator=(const ReadHandle&) = delete;
    rocksdb::DB* operator->() const { return db_; }

   private:
    friend class Store;
    ReadHandle(Store* store, rocksdb::DB* db, bool read_only)
        : store_(store), db_(db), read_only_(read_only) {}
    Store* store_;
    rocksdb::DB* db_;
    bool read_only_;
  };
  ReadHandle Reader();
  // A reader of the read-only handle is done (the last one wakes the opener).
  void ReleaseReadOnly();
  // WaitWritable, then the read-write handle (non-null on OK).
  StatusOr<rocksdb::DB*> Writable();

  // Writes the memtables to table files and waits for it.
  rocksdb::Status FlushMemtables();
  Store(std::string dir, StoreMetrics metrics, std::shared_ptr<rocksdb::Cache> cache,
        std::shared_ptr<rocksdb::Cache> records);
  // opener_'s body: waits for the time StartWritableOpen set, a write (WaitWritable) or the
  // store's close, then (unless closed first) runs OpenWritable.
  void RunOpener(OpenFailedCallback on_open_failed);
  // The read-write open: publishes db_ (or the error), then closes the read-only handle once no
  // reader holds it.
  void OpenWritable(OpenFailedCallback on_open_failed);
  // After a failed write: asks RocksDB to resume. REQUIRES: writer thread, writable.
  Status MaybeResume();

  // The record cache (records_). A fill is refused when a write of a key of its stripe came
  // between the fill's read of the stripe's generation and the fill (the read may predate it).
  struct RecordStripe {
    std::mutex mu;
    uint64_t gen = 0;  // GUARDED_BY(mu): bumped by every write of a key of this stripe.
  };
  class RecordCacheUpdate;
  static bool IsCachedRecord(std::string_view key);
  RecordStripe& StripeFor(std::string_view key);
  // Inserts what a point read found, unless a write came after `gen` was read.
  void FillRecord(std::string_view key, const std::string& value, uint64_t gen);
  // After Write(batch): the batch's records of the register types enter the cache (`written`),
  // or leave it (a failed write may or may not be in RocksDB); the records of a deleted range
  // leave it too.
  void UpdateRecords(const rocksdb::WriteBatch& batch, bool written);
  // Sets (value non-null) or erases one record, bumping its stripe's generation.
  void SetRecord(std::string_view key, const rocksdb::Slice* value);
  // Erases every cached record in [begin, end), bumping every stripe's generation first.
  void EraseRecords(std::string_view begin, std::string_view end);

  const std::string dir_;
  StoreMetrics metrics_;
  std::shared_ptr<rocksdb::Cache> cache_;
  // The record cache: the latest stored bytes of hot records of the register types, keyed by
  // the whole key, in an LRU of its own (a share of the memory budget). Point reads of those
  // records (a GET, and the writer's read of a record before it writes it) are answered from it
  // without a memtable search or a table file's index, filter and data block; unlike RocksDB's
  // row cache it survives flushes and compactions. Write is its only writer, after RocksDB
  // took the batch (write-through), so a hit is always the stored truth; reads fill it.
  std::shared_ptr<rocksdb::Cache> records_;
  static constexpr size_t kRecordStripes = 64;
  std::array<RecordStripe, kRecordStripes> stripes_;
  // flock(2) on the directory's edgestate.lock, held from before the first open until after
  // the close: RocksDB's own lock (LOCK) exists only for the read-write handle.
  int lock_fd_ = -1;
  std::unique_ptr<rocksdb::DB> read_only_;  // Until the read-write open ends and it is unused.
  std::atomic<int> read_only_users_{0};
  std::unique_ptr<rocksdb::DB> db_;  // The read-write handle; set once, before writable_.
  std::atomic<bool> writable_{false};
  std::thread opener_;  // Made by Open when it returns the read-only handle.
  mutable std::mutex open_mu_;
  // Signals open_status_ set, read_only_users_ at 0, and the opener's start and stop below.
  std::condition_variable open_cv_;
  std::optional<Status> open_status_;  // GUARDED_BY(open_mu_)
  bool closing_ = false;               // GUARDED_BY(open_mu_): the destructor runs.
  // GUARDED_BY(open_mu_): when the read-write open starts (time_point::min(): at once, a write
  // waits for it); nullopt until StartWritableOpen or a write asks for it.
  std::optional<std::chrono::steady_clock::time_point> open_at_;
  std::atomic<bool> failed_{false};
};

}  // namespace edgestate::storage
