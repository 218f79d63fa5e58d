// Store: the node's durable state in RocksDB.
//
// Key layout (docs/storage.md): "c" + counter name -> CounterRecord (protobuf);
// "m" + name -> node metadata (the health probe; "epoch", this data directory's epoch);
// "s" + counter name -> the strong-consistency acceptor's state for that counter (docs/strong.md);
// "v" + origin -> applied position of a peer region, "SEQ EPOCH" in decimal (docs/replication.md;
// records written before epochs existed hold "SEQ" and read as epoch 0). Values are whole CRDT
// states, so the last Put of a key is its complete truth and replaying the WAL is idempotent.
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

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/metrics.h"
#include "common/status.h"
#include "crdt/pn_counter.h"

namespace edgestate::storage {

inline constexpr char kCounterPrefix = 'c';
inline constexpr char kMetaPrefix = 'm';
inline constexpr char kAppliedPrefix = 'v';
inline constexpr char kStrongPrefix = 's';  // "s" + counter name -> strong::AcceptorRecord.

std::string CounterKey(std::string_view name);
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

struct StoreMetrics {
  Histogram* sync_write_seconds = nullptr;  // Latency of synced batch writes (WAL + fdatasync).
  Histogram* wal_sync_seconds = nullptr;    // Latency of SyncWal (async mode).
};

class Store {
 public:
  // Opens (creating if missing) the database in `dir`. Unavailable when the directory cannot be
  // created or locked (e.g. another process owns it), InvalidArgument when it is not a database.
  static StatusOr<std::unique_ptr<Store>> Open(const std::string& dir, StoreMetrics metrics = {});
  ~Store();

  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Applies `batch` atomically. Unavailable on I/O errors (disk full, read-only filesystem);
  // after such an error the next Write or SyncWal first closes and reopens the database
  // (REQUIRES then: no concurrent ForEachCounter/GetCounter, which edgestate only calls at
  // start-up). A failed write may or may not be on disk after a restart; it is never
  // acknowledged.
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
  // Returns the stored bytes of one counter; NotFound when absent.
  StatusOr<std::string> GetCounter(std::string_view name);

  // RocksDB's estimate of the number of keys (for reserving memory at start-up).
  uint64_t EstimateNumKeys();

 private:
  Store(std::unique_ptr<rocksdb::DB> db, std::string dir, StoreMetrics metrics);
  // After a failed write: closes and reopens the database. REQUIRES: writer thread.
  Status MaybeResume();

  const std::string dir_;
  std::unique_ptr<rocksdb::DB> db_;  // Null only while a reopen after an error has failed.
  StoreMetrics metrics_;
  std::atomic<bool> failed_{false};
};

}  // namespace edgestate::storage
