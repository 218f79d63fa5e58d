// Keyspace: the node's records (docs/storage.md) over their CRDTs, in memory and in the store.
//
// Records of every type share one group-commit writer, one own sequence (replication's stream)
// and one change index (docs/storage.md). Counters live in memory too: a background loader
// brings the stored ones in after Open, and until it is done a counter not in memory yet is read
// from the store when first asked for (so a node answers at once, whatever it holds); after
// that their reads never touch the disk. Register records (keys, cache entries, purges) are read
// from the store, whose block cache holds the hot ones. Writes are queued to the single writer
// thread, which takes every operation queued since its last batch, applies them to staged copies of
// the affected records, writes all of them in one RocksDB batch (one fdatasync in fsync mode: group
// commit), then publishes the new states and completes each operation. A reader therefore never
// sees a value that is not yet durable (fsync mode) and an acknowledged write is never lost. See
// docs/threading.md.
//
// Thread-safety: every public method may be called from any thread. Callbacks run on the
// writer thread (or synchronously on the caller's thread, with Unavailable, after Stop); they
// must be short and must not block.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"
#include "consistency/session_token.h"
#include "crdt/lww_register.h"
#include "crdt/pn_counter.h"
#include "env/clock.h"
#include "storage/store.h"
#include "storage/write_queue.h"

namespace edgestate::service {

enum class Durability {
  kFsync,  // Acknowledge after the batch is fdatasync'ed.
  kAsync,  // Acknowledge after the WAL append; sync every `async_sync_interval`.
};

// The wait before the expiry sweep's next run: `pause` (the schedule's: between the runs of a
// pass, or between passes), lengthened so that a run that read `bytes_read` keeps the sweep
// within `bytes_per_sec` (0: no bound), by at most a day. Pure.
std::chrono::milliseconds SweepPause(std::chrono::milliseconds pause, uint64_t bytes_read,
                                     uint64_t bytes_per_sec);

struct KeyspaceOptions {
  std::string region;  // The origin slot this node writes.
  Durability durability = Durability::kFsync;
  std::chrono::milliseconds async_sync_interval{100};
  // Commit delay: when the previous batch held at least kGatherThreshold operations, the
  // writer waits up to this long for about as many to queue before committing.
  std::chrono::microseconds commit_delay{200};
  // The most operations one batch takes (0: every queued one). Each batch's answers reach the
  // I/O threads together; a bound keeps that burst short, so reads between batches wait less
  // behind a write flood. The rest stay queued for the next batch.
  size_t max_batch = 0;
  // The writer thread's nice value (0..19; 0: the process's own). Above 0, when the CPU is
  // saturated the I/O threads (reads, parsing, answers) run before commits: a write flood
  // slows writes rather than reads. Durability and order are unchanged.
  int writer_nice = 0;
  const Clock* clock = RealClock();
  // Other regions replicate with this node. Alone, every own write is applied everywhere at
  // once (stable, see SetStableSeq); with peers, only what they all acknowledged.
  bool has_peers = false;
  // The sweep that collects dead records (docs/keys.md): how often it runs, and how many
  // records one run looks at (at most; it runs again soon when it hit the limit).
  std::chrono::milliseconds sweep_interval{1000};
  size_t sweep_batch = 2000;
  // The most bytes of records (keys and values as stored) the sweep reads per second, on
  // average over its runs; 0: no bound. A pass reads every register record, so without a bound
  // a node that holds gigabytes of sessions reads them from disk over and over while idle
  // (docs/storage.md, "Collecting dead records"). SweepPause says how long a run's reads make the
  // next one wait.
  uint64_t sweep_bytes_per_sec = 0;
  // Admission of client writes (Increment, WriteRegister): at most this many queued or being
  // committed at once, carrying at most this many bytes of names and values; beyond either, a
  // write is refused at once with ResourceExhausted instead of queueing. 0: no bound.
  // Replication, strong consensus records and probes are never refused by it.
  size_t max_pending_writes = 0;
  size_t max_pending_write_bytes = 0;
  // Called once on the loader thread when the background load of the counters ends: OK, or the
  // store's error (a damaged data directory: the caller must stop serving). Not called when
  // Stop interrupts the load. Must not block and must not call Stop.
  std::function<void(const Status&)> on_loaded;
};

struct CounterValue {
  int64_t value = 0;
  int64_t updated_at_ms = 0;  // 0 when the counter was never written.
};

// The slot that holds the sum of strong increments (docs/strong.md). Written only by applying
// a value chosen by consensus; region names cannot contain '*', so it never collides with one.
inline constexpr std::string_view kStrongOrigin = "*strong";

// Retired lives (docs/storage.md, "A region's lives"). A counter's slot named by a bare region
// holds the writes of that region's current life, as far as this node knows. When a region
// comes back with a newer data-directory epoch (its directory was recreated), every node moves
// the region's bare slot to "REGION@EPOCH" (the old life's epoch), a slot nobody writes again,
// so the new life's slot starts from zero beside it instead of hiding behind it. Retired slots
// travel with the counter from every node that holds them, so they reach every region, the new
// life included: nothing the old life's peers received is lost.
inline constexpr char kLifeSeparator = '@';
std::string RetiredOrigin(std::string_view region, uint32_t epoch);
// Splits "REGION@EPOCH"; false when `origin` is not one (no separator, a bad region name, an
// epoch that is not a positive 32-bit decimal).
bool ParseRetiredOrigin(std::string_view origin, std::string_view* region, uint32_t* epoch);

// One counter's slot of one origin, as replication ships it.
struct SlotUpdate {
  std::string name;
  crdt::Slot slot;
  // Empty: the sending region's own slot. Otherwise kStrongOrigin or a retired life
  // (RetiredOrigin); nothing else is accepted.
  std::string origin = {};
};

// The name rules of the API: 1..256 bytes of UTF-8 without control characters.
// InvalidArgument otherwise, with a message saying which rule failed.
inline constexpr size_t kMaxCounterNameBytes = 256;
Status ValidateCounterName(std::string_view name);
// Keys and cache keys: 1..512 bytes of UTF-8 without control characters.
inline constexpr size_t kMaxKeyNameBytes = 512;
Status ValidateKeyName(std::string_view name);
// A purge pattern: "=" + a cache key, or "*" + a prefix (0..512 bytes, same rules).
Status ValidatePurgePattern(std::string_view pattern);
// Values of keys and cache entries: at most 1 MiB; content types at most 256 bytes of
// visible ASCII (what an HTTP header may carry).
inline constexpr size_t kMaxValueBytes = 1 << 20;
inline constexpr size_t kMaxContentTypeBytes = 256;
Status ValidateContentType(std::string_view content_type);

// A register record (key or purge) as replication ships it: the whole current write, and the
// sending region's change-index position that shipped it (0: not known, as from a sender older
// than this field). The receiver keeps that position only for a write with reg.origin_seq 0, to
// know when it is stable (storage::StoredRegister::relay).
struct RegisterUpdate {
  storage::RecordType type = storage::RecordType::kKey;
  std::string name;
  crdt::LwwRegister reg;
  uint64_t stream_seq = 0;
};

// A local write of a register record (Keyspace::WriteRegister).
struct RegisterWrite {
  enum class Kind {
    kPut,     // Replace the value (and content type); expiry from ttl_ms (0: none).
    kDelete,  // Write a tombstone, whether or not the record is live here.
    kTouch,   // Keep the value; expiry from ttl_ms. NotFound when not live.
  } kind = Kind::kPut;
  std::string value;
  std::string content_type;
  int64_t ttl_ms = 0;  // 0: never expires (kPut only). REQUIRES: 0 or a valid TTL.
  // Conditions, checked against this replica's current write: FailedPrecondition when the
  // live write's ETag differs from *if_match (or none is live), or when if_none_match and a
  // live write exists.
  std::optional<std::string> if_match = {};
  bool if_none_match = false;
  // Cache fills: the clock when the origin fetch began. The fill is dropped (Aborted) when a
  // purge covering the key was made after it. Ignored for other types.
  crdt::Hlc fill_started = {};
};

struct RegisterResult {
  crdt::LwwRegister written;  // The write made (its value left empty).
  bool existed = false;       // A live write was replaced.
  size_t size = 0;            // Value bytes of the write.
};

// One record of a listing.
struct ListedKey {
  std::string name;
  crdt::LwwRegister reg;  // Value left empty.
  size_t size = 0;
};

// The ETag of a write: its clock and origin, quoted ("W.L.ORIGIN").
std::string ETagOf(const crdt::LwwRegister& reg);

// The write `w` makes over `current` (the key's write as the caller has it, live or dead; null
// when none) at `now_ms`, stamped `hlc` by `origin` (origin_seq and origin_epoch left 0). Moves
// w's value. FailedPrecondition when a condition fails (see RegisterWrite), NotFound for a touch
// of a record that is not live. Pure: local writes (WriteRegister) and the strong change
// function (strong/caspaxos.h) both make their writes with it.
StatusOr<crdt::LwwRegister> MakeRegisterWrite(const crdt::LwwRegister* current, RegisterWrite& w,
                                              crdt::Hlc hlc, std::string origin, int64_t now_ms);

class Keyspace {
 public:
  using IncrementCallback = std::function<void(StatusOr<CounterValue>)>;
  using ProbeCallback = std::function<void(Status)>;
  using RegisterCallback = std::function<void(StatusOr<RegisterResult>)>;

  // Reads the keyspace's metadata (sequence, positions, purges, epoch) and starts the writer
  // thread; the stored counters are loaded into memory by StartLoading. `store` and `metrics`
  // must outlive the service. Returns the store's error when metadata cannot be read or
  // decoded. A data directory from before the change index is migrated here, loading every
  // counter before Open returns.
  static StatusOr<std::unique_ptr<Keyspace>> Open(storage::Store* store, KeyspaceOptions options,
                                                  MetricsRegistry* metrics);
  ~Keyspace();  // Calls Stop().

  // The counter's current value; a counter never written reads as 0. Before loaded(), a counter
  // not in memory yet is read from the store: Unavailable or InvalidArgument when that read
  // fails (a damaged store never reads as 0).
  StatusOr<CounterValue> Read(std::string_view name) const;

  // Adds `delta` to `name` (which must satisfy ValidateCounterName). `done` receives the new
  // value once the write is acknowledged (see Durability), FailedPrecondition when the value
  // would overflow int64 (nothing changes), ResourceExhausted at once when the pending-write
  // bound is reached (nothing changes; see KeyspaceOptions), or Unavailable when storage failed
  // or the service is stopping (the write may or may not have reached the disk; it is not in
  // memory).
  void Increment(std::string name, int64_t delta, IncrementCallback done);

  // The counter's whole CRDT state (every origin's slot); empty when never written. Errors as
  // for Read.
  StatusOr<crdt::PnCounter> State(std::string_view name) const;

  // Merges `strong` into `name`'s kStrongOrigin slot as a local write: the counter gets a new
  // own sequence number, so replication ships the slot to every region and session tokens and
  // watermarks cover it. `done` gets the counter's local value after the merge, or Unavailable
  // like Increment. REQUIRES: ValidateCounterName(name).
  void ApplyStrong(std::string name, crdt::Slot strong, IncrementCallback done);

  // Stores `chosen`, a write of key `name` chosen by strong consensus (strong/strong_service.h),
  // as a local write: when it is greater (crdt::Compare) than this replica's write it replaces
  // it with a new own sequence number, so it replicates to every region; otherwise nothing
  // changes. Never refused by the pending-write bound. `done` gets the replica's write after
  // it (value left empty), or Unavailable like Increment. REQUIRES: ValidateKeyName(name).
  void ApplyChosenRegister(std::string name, crdt::LwwRegister chosen, RegisterCallback done);

  // Writes the raw record key -> value through the group commit; `done` gets OK once it is
  // synced (in either durability mode: the batch holding it is fdatasync'ed). Used by the strong
  // acceptor, whose replies must wait for its state to be on disk.
  void PutRecord(std::string key, std::string value, ProbeCallback done);

  // Writes register record `name` of `type` (kKey, kCacheEntry or kPurge; REQUIRES the name
  // rules of its type and a valid write). Keys and purges get an own sequence number and
  // replicate; cache entries stay in this region. `done` gets the write once acknowledged (see
  // Durability), FailedPrecondition when a condition failed, NotFound for a touch of a record
  // that is not live, Aborted for a cache fill a later purge covers, or ResourceExhausted and
  // Unavailable like Increment.
  void WriteRegister(storage::RecordType type, std::string name, RegisterWrite write,
                     RegisterCallback done);

  // The current write of register record `name` of `type` as this replica has it, live or
  // dead; std::nullopt when it has none. Reads the store (its block cache holds the hot ones).
  // Unavailable on I/O errors, InvalidArgument on an unreadable record.
  StatusOr<std::optional<crdt::LwwRegister>> GetRegister(storage::RecordType type,
                                                         std::string_view name) const;

  // Up to `limit` live records of `type` whose names start with `prefix` and sort after
  // `after`, in name order. *next_after is where the next page starts (the last name looked
  // at), or empty when the listing is complete. One call looks at no more than
  // limit + kListScanBudget records, so dead ones cannot make it unbounded.
  static constexpr size_t kListScanBudget = 10000;
  Status ListRegisters(storage::RecordType type, std::string_view prefix, std::string_view after,
                       size_t limit, std::vector<ListedKey>* out, std::string* next_after) const;

  // This node's hybrid logical clock now (for cache fills; thread-safe).
  crdt::Hlc ClockNow();

  // Writes a probe record through the same group commit path; `done` gets OK when storage
  // accepted (and, in fsync mode, synced) it.
  void ProbeStorage(ProbeCallback done);

  // --- Replication (docs/replication.md) ---

  // This node's own write sequence: every acknowledged local write has seq <= CommittedSeq().
  uint64_t CommittedSeq() const { return committed_seq_.load(std::memory_order_acquire); }

  // Collects the own-origin state of every record whose change-index entry lies above
  // `after_seq`, oldest entry first: counters' own slots to *out, and register records (keys,
  // purges: their whole current write, whoever made it) to *registers. Entries above
  // CommittedSeq() are taken too: a write committing during the scan may have moved a record's
  // entry there from below. One counter's entries stay together: with `include_strong` its
  // kStrongOrigin slot travels as a second SlotUpdate, with `include_retired` so do its retired
  // lives' slots. With `registers` null, register records are skipped (a peer that cannot take
  // them).
  //
  // Limits: at most `max_entries` SlotUpdates and registers in all, and register values up to
  // `max_register_bytes`; the first record is always taken whole. Hitting one ends the result
  // with kLimit; unreadable storage ends it with kFailed. Both leave `covers` at `after_seq`:
  // a record not taken may hold a write below the last one taken (its entry moved past it).
  //
  // A *pass* is a run of calls, each continuing at the previous `resume_after`, starting from a
  // position a replica covers. Once a replica applied everything a pass collected, it holds
  // every local write with seq <= the `covers` of the pass's kComplete call. REQUIRES:
  // max_entries > 0. Thread-safe; the scan runs on the caller's thread.
  struct CollectedChanges {
    enum class End { kComplete, kLimit, kFailed };
    End end = End::kComplete;
    // With kComplete: CommittedSeq() as read before the scan (never below after_seq).
    // Otherwise after_seq.
    uint64_t covers = 0;
    // Where the pass goes on: after the last entry taken (kLimit, kFailed) or `covers`.
    uint64_t resume_after = 0;
  };
  CollectedChanges CollectOwnChanges(uint64_t after_seq, size_t max_entries,
                                     std::vector<SlotUpdate>* out, bool include_strong = false,
                                     std::vector<RegisterUpdate>* registers = nullptr,
                                     size_t max_register_bytes = 4u << 20,
                                     bool include_retired = false) const;
  // Test seam: called by CollectOwnChanges between reading CommittedSeq() and starting its
  // scan. Set before any collection; production code leaves it empty.
  void TEST_SetBeforeChangeScan(std::function<void()> hook) {
    before_change_scan_ = std::move(hook);
  }

  // This data directory's epoch (Store::GetOrCreateEpoch): tells this node's lives apart.
  uint32_t epoch() const { return epoch_; }

  // Merges slots received from `origin` (a peer region, never this node's own) in its life
  // `epoch`, and records that every write of that life with seq <= covers_seq is now applied;
  // durably, in one batch. A different epoch than the one recorded starts the origin's applied
  // sequence again from covers_seq. Slots with invalid names are rejected: `done` gets
  // InvalidArgument and nothing is applied. Applying the same slots twice, or older ones after
  // newer ones, changes nothing.
  // `registers` (keys and purges) merge by their LWW order in the same batch; those whose
  // origin is not `origin` (relayed: written by another region) keep their own origin epoch.
  // A newer `epoch` than the one recorded (not 0) retires the origin's earlier life first
  // (RetiredOrigin): its bare slots move to "ORIGIN@OLD", and this node re-ships them and the
  // registers that life wrote last (new own sequence numbers), so every region, the new life
  // included, gets them. So does a received slot of a retired life this node still took for
  // current. Retiring touches every counter and register record of the store in one batch.
  void ApplyRemote(std::string origin, uint32_t epoch, uint64_t covers_seq,
                   std::vector<SlotUpdate> slots, ProbeCallback done,
                   std::vector<RegisterUpdate> registers = {});

  // The life of `origin` last applied here and the highest covers_seq applied (and stored) in
  // it; zeros when none.
  consistency::OriginPosition AppliedPosition(std::string_view origin) const;
  // AppliedPosition of every origin with a write applied here, read under one lock (a
  // consistent cut); canonical (consistency/session_token.h).
  consistency::Position AppliedPositions() const;
  // The highest covers_seq applied for `origin`'s life `epoch`; 0 when none or another life.
  uint64_t AppliedSeq(std::string_view origin, uint32_t epoch) const;

  // Called on the writer thread after every commit that acknowledged local writes. Set before
  // any write is submitted; must be cheap and must not block.
  void SetCommitListener(std::function<void()> listener) { commit_listener_ = std::move(listener); }
  // Called on the writer thread after every commit that published own writes or remote slots
  // (CommittedSeq or an AppliedPosition moved). Same rules as the commit listener.
  void SetProgressListener(std::function<void()> listener) {
    progress_listener_ = std::move(listener);
  }
  // Called on the writer thread with each purge pattern ("=key" or "*prefix") a batch applies
  // (own or remote), before the batch commits: a reader that misses because of the purge finds
  // the listener already called. Must not block. Set before writes begin.
  void SetPurgeListener(std::function<void(std::string_view pattern)> listener) {
    purge_listener_ = std::move(listener);
  }

  // Every region has applied every write of `origin`'s life `epoch` with seq <= stable_seq (the
  // origin computes it from its peers' acknowledgments and sends it with its heartbeats; for
  // this node's own region the replicator sets it). Dead register records whose write is stable are
  // collected by the sweep: no region can send an older write of them any more.
  void SetStableSeq(std::string_view origin, uint32_t epoch, uint64_t stable_seq);
  // The stable seq last set for `origin` (in whatever life), for its heartbeats.
  uint64_t StableSeq(std::string_view origin) const;
  // Whether the write (origin, its life `epoch`, seq) is stable: applied in every region.
  bool IsStable(std::string_view origin, uint32_t epoch, uint64_t seq) const;

  // What the sweep has done (for metrics and tests).
  struct SweepStats {
    uint64_t passes = 0;     // Complete passes over the register records.
    uint64_t expired = 0;    // Expired values whose bytes were dropped.
    uint64_t collected = 0;  // Dead records removed (tombstones, expired keys, old purges).
  };
  SweepStats sweep_stats() const;

  // The register records as the last complete sweep pass counted them, and the bytes their
  // key ranges take in the store: {"keys":{"live","dead","bytes"},"cache":{...},
  // "purges":{...},"sweep":{"passes","expired","collected"}}.
  std::string StatusJson() const;

  // Number of counters in memory: every stored one once loaded().
  size_t size() const { return size_.load(std::memory_order_relaxed); }
  // Starts loading the stored counters into memory on a thread of their own, at the I/O
  // threads' priority for kLoadFullShare and at nice 19 after that (once; later calls and calls
  // after Stop do nothing). A node calls it once it serves, so that the load does not delay its
  // first answers; until it is done, reads go to the store as described above, and a read that
  // does costs more than the load of one counter, so the load ending soon is what brings a node
  // to full speed (docs/storage.md, "Start-up").
  void StartLoading();
  // Whether every stored counter is in memory. Until then reads of counters not in memory go
  // to the store (Read); afterwards a counter missing from memory was never written.
  bool loaded() const { return loaded_.load(std::memory_order_acquire); }
  // Blocks until the background load ended (or Stop); returns how it ended. REQUIRES:
  // StartLoading or Stop was called, or Open loaded every counter.
  Status WaitLoaded() const;
  // How the load ended, without waiting; nullopt while it runs (or before StartLoading).
  std::optional<Status> LoadResult() const;
  // How long loading the stored counters took (from Open); valid once loaded().
  std::chrono::milliseconds load_time() const {
    return std::chrono::milliseconds(load_ms_.load(std::memory_order_relaxed));
  }

  // Stops accepting work, commits everything already queued, syncs, and joins the writer and
  // the loader. Idempotent.
  void Stop();

 private:
  struct Op {
    enum class Kind {
      kIncrement,
      kProbe,
      kApply,
      kStrong,
      kRecord,
      kRegister
    } kind = Kind::kIncrement;
    // kIncrement, kStrong: the counter. kApply: the origin region. kRecord: the key.
    // kRegister: the record's name.
    std::string name;
    storage::RecordType type = storage::RecordType::kCounter;  // kRegister.
    RegisterWrite write;                                       // kRegister.
    std::optional<crdt::LwwRegister> chosen;  // kRegister: ApplyChosenRegister, not `write`.
    std::vector<RegisterUpdate> registers;    // kApply.
    RegisterCallback register_done;           // kRegister.
    std::string value;                        // kRecord.
    crdt::Slot strong;                        // kStrong.
    int64_t delta = 0;
    uint64_t covers_seq = 0;        // kApply.
    uint32_t epoch = 0;             // kApply.
    std::vector<SlotUpdate> slots;  // kApply.
    IncrementCallback increment_done;
    ProbeCallback probe_done;  // kProbe, kApply and kRecord.
    // Bytes this op holds against the pending-write bound; 0 when it is not counted.
    size_t admitted_bytes = 0;
  };
  struct Shard {
    mutable std::mutex mu;
    struct Hash {
      using is_transparent = void;
      size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    std::unordered_map<std::string, crdt::PnCounter, Hash, std::equal_to<>>
        counters;  // GUARDED_BY(mu)
  };
  static constexpr size_t kShards = 64;
  static constexpr size_t kLoadBatch = 4096;  // Counters LoadCounters publishes at a time.
  // The background load runs at the I/O threads' priority for this long, then at nice 19
  // (docs/storage.md, "Start-up").
  static constexpr std::chrono::milliseconds kLoadFullShare{1500};
  static constexpr size_t kGatherThreshold = 4;
  // Between the runs of one sweep pass: idle, and while writes keep the writer busy (a sweep
  // run reads up to options_.sweep_batch whole records: about 4 % of the node's CPU when runs
  // follow each other every 50 ms under a write load).
  static constexpr std::chrono::milliseconds kSweepPause{50};
  static constexpr std::chrono::milliseconds kSweepPauseUnderLoad{250};

  Keyspace(storage::Store* store, KeyspaceOptions options, MetricsRegistry* metrics);
  // Reads the metadata; a data directory from before the change index (no index entry) also has
  // every counter loaded and indexed.
  Status Load();
  // Puts every stored counter not in memory yet into memory (the loader, Load, or a retirement
  // before the loader is done). With `migrate` (a data directory from before the change index)
  // it also adds index entries for their own writes to *migrate and raises *max_seq to the
  // newest. Aborted once *stop is set (when given); the store's error, or InvalidArgument naming
  // an unreadable counter. `after_batch` (when given) is called on the calling thread after each
  // batch of counters went into memory.
  Status LoadCounters(rocksdb::WriteBatch* migrate, uint64_t* max_seq,
                      const std::atomic<bool>* stop,
                      const std::function<void()>& after_batch = nullptr);
  void LoaderLoop();
  // Records how the load ended (the first call counts) and wakes WaitLoaded; with OK, also
  // loaded() and load_time().
  void FinishLoad(const Status& s);
  // Before loaded(): brings counter `name` into memory from the store unless it is there
  // already (a state in memory is never older than the stored one: only the writer changes
  // either, memory after the store). OK when the counter is in memory afterwards or is not
  // stored. Errors of the store read or the decoding otherwise.
  Status FaultIn(std::string_view name) const;
  static size_t ShardIndex(std::string_view name);
  Shard& ShardFor(std::string_view name) const;
  void WriterLoop();
  // Commits one batch. Returns the number of increments it acknowledged.
  size_t CommitBatch(std::vector<Op>& ops);
  void Enqueue(Op op);
  // Counts a client write against the pending-write bound; ResourceExhausted (and nothing
  // counted) when it would exceed it. Release undoes it once the op is answered.
  Status Admit(Op& op);
  void Release(size_t ops, size_t bytes);
  Status ValidateRemote(const Op& op) const;

  storage::Store* const store_;
  const KeyspaceOptions options_;
  std::unique_ptr<Shard[]> shards_;
  mutable std::atomic<size_t> size_{0};
  // The background load (LoaderLoop): loaded_ once every stored counter is in memory.
  std::chrono::steady_clock::time_point open_time_;
  std::atomic<bool> loaded_{false};
  std::atomic<bool> stop_loading_{false};
  std::atomic<int64_t> load_ms_{0};
  mutable std::mutex load_mu_;
  mutable std::condition_variable load_cv_;
  bool load_done_ = false;             // GUARDED_BY(load_mu_)
  Status load_status_ = Status::Ok();  // GUARDED_BY(load_mu_)
  std::thread loader_;
  std::once_flag load_once_;

  // Own-origin sequence numbers. next_seq_ is writer-thread state.
  uint64_t next_seq_ = 1;
  std::atomic<uint64_t> committed_seq_{0};
  // Register records staged by one batch (CommitBatch).
  struct StagedRegister;
  // Applies a register write (local: `op`) or merge (remote) to a staged record; see .cc.
  StatusOr<RegisterResult> StageLocalWrite(Op& op, StagedRegister& st, int64_t now_ms);
  RegisterResult StageChosenWrite(Op& op, StagedRegister& st);
  // What one run of the sweep did: whether it stopped at options_.sweep_batch (the pass goes
  // on), and how many bytes of records (keys and values) it read.
  struct SweepRun {
    bool more = false;
    uint64_t bytes_read = 0;
  };
  // One run of the sweep on the writer thread: looks at up to options_.sweep_batch register
  // records from where the previous run stopped.
  SweepRun Sweep();
  std::string sweep_cursor_;  // Writer thread: whole key where the next run starts.
  mutable std::mutex stable_mu_;
  // Origin -> (the life its stable position counts in, that position). GUARDED_BY(stable_mu_)
  std::map<std::string, std::pair<uint32_t, uint64_t>, std::less<>> stable_;
  std::atomic<uint64_t> sweep_passes_{0};
  // Live and dead records of each register type (cache, key, purge): counted by the pass in
  // progress (writer thread), published when it completes.
  using RecordCounts = std::array<std::pair<uint64_t, uint64_t>, 3>;
  RecordCounts pass_counts_{};
  // Writer thread: the last counts stored (meta "record-counts"), loaded by Open; nullopt when
  // none is stored or it is damaged (the next pass stores its counts).
  std::optional<RecordCounts> stored_counts_;
  std::array<std::atomic<uint64_t>, 3> live_{}, dead_{};
  // What /v1/cluster and edgestate_records show: `counts` (a completed pass's, or the stored).
  void PublishCounts(const RecordCounts& counts);
  Counter* expired_total_ = nullptr;
  Histogram* purge_propagation_ = nullptr;
  Counter* collected_total_ = nullptr;
  Counter* sweep_read_bytes_total_ = nullptr;
  // Cache purges in force: pattern -> the purge's clock (for fills that began before it).
  mutable std::mutex purges_mu_;
  std::map<std::string, crdt::Hlc, std::less<>> purges_;  // GUARDED_BY(purges_mu_)
  // True when a purge made after `started` covers cache key `name`.
  bool PurgedAfter(std::string_view name, crdt::Hlc started) const;
  std::mutex hlc_mu_;
  crdt::HlcClock hlc_;  // GUARDED_BY(hlc_mu_)
  // origin -> highest applied covers_seq.
  mutable std::mutex applied_mu_;
  std::map<std::string, consistency::OriginPosition, std::less<>>
      applied_;  // GUARDED_BY(applied_mu_)
  std::function<void()> commit_listener_;
  std::function<void()> before_change_scan_;
  std::function<void()> progress_listener_;
  std::function<void(std::string_view)> purge_listener_;
  uint32_t epoch_ = 0;

  storage::WriteQueue<Op> queue_;
  std::thread writer_;
  std::once_flag stop_once_;

  Histogram* batch_size_;
  Histogram* async_unsynced_;
  Counter* increments_ok_;
  Counter* increments_rejected_;
  Counter* write_errors_;
  Counter* writes_overloaded_;
  std::atomic<size_t> pending_writes_{0};
  std::atomic<size_t> pending_write_bytes_{0};
};

}  // namespace edgestate::service
