#include "service/keyspace.h"

#include <fmt/format.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <deque>
#include <set>
#include <tuple>
#include <utility>

#include "common/handoff.h"
#include "common/region.h"
#include "common/strings.h"
#include "common/thread_name.h"

namespace edgestate::service {

namespace {

// The record counts of a sweep pass as stored: six decimal numbers, live and dead for each
// type, separated by spaces.
std::string EncodeRecordCounts(const std::array<std::pair<uint64_t, uint64_t>, 3>& counts) {
  return fmt::format("{} {} {} {} {} {}", counts[0].first, counts[0].second, counts[1].first,
                     counts[1].second, counts[2].first, counts[2].second);
}

// InvalidArgument unless `text` is what EncodeRecordCounts makes.
StatusOr<std::array<std::pair<uint64_t, uint64_t>, 3>> DecodeRecordCounts(std::string_view text) {
  const Status malformed =
      Status::InvalidArgument(fmt::format("malformed record counts {:?}", std::string(text)));
  std::array<std::pair<uint64_t, uint64_t>, 3> counts{};
  const char* p = text.data();
  const char* const end = text.data() + text.size();
  for (size_t i = 0; i < 6; ++i) {
    if (i > 0 && (p == end || *p++ != ' ')) return malformed;
    uint64_t& v = i % 2 == 0 ? counts[i / 2].first : counts[i / 2].second;
    auto [next, ec] = std::from_chars(p, end, v);
    if (ec != std::errc()) return malformed;
    p = next;
  }
  if (p != end) return malformed;
  return counts;
}

// A copy of `r` without its value (an answer carries the metadata; a value may be a MiB).
// `r` is unchanged on return.
crdt::LwwRegister WithoutValue(crdt::LwwRegister& r) {
  std::string value = std::move(r.value);
  crdt::LwwRegister copy = r;
  r.value = std::move(value);
  return copy;
}

Status ValidateName(std::string_view what, std::string_view name, size_t min, size_t max) {
  if (name.size() < min) return Status::InvalidArgument(fmt::format("{} is empty", what));
  if (name.size() > max) {
    return Status::InvalidArgument(
        fmt::format("{} is {} bytes; the limit is {}", what, name.size(), max));
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) {
      return Status::InvalidArgument(fmt::format("{} contains a control character", what));
    }
  }
  if (!IsValidUtf8(name))
    return Status::InvalidArgument(fmt::format("{} is not valid UTF-8", what));
  return Status::Ok();
}

// Purges stay in force this long after they are made: longer than any origin fetch, so a fill
// that began before a purge always finds it (docs/cache.md).
constexpr int64_t kPurgeRetentionMs = 10 * 60 * 1000;
// Remote clocks further ahead of ours than this are not taken into our clock.
constexpr int64_t kMaxObservedSkewMs = 60 * 1000;

// The smallest string greater than every string starting with `prefix`; empty when none is
// (the prefix is all 0xff bytes).
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty() && static_cast<unsigned char>(prefix.back()) == 0xff) prefix.pop_back();
  if (!prefix.empty()) prefix.back() = static_cast<char>(prefix.back() + 1);
  return prefix;
}

// Lowers the calling thread's CPU priority to `nice` (Linux: a thread id names the thread;
// lowering never needs a privilege). A failure leaves the default and is logged.
void LowerThisThreadPriority(int nice, const char* thread) {
  const auto tid = static_cast<id_t>(syscall(SYS_gettid));
  if (setpriority(PRIO_PROCESS, tid, nice) != 0) {
    spdlog::warn("cannot lower the {} thread's priority: {}", thread, std::strerror(errno));
  }
}

// The background load's priority after its first kLoadFullShare (Keyspace::LoaderLoop).
constexpr int kLoaderNiceAfterFullShare = 19;

}  // namespace

std::string RetiredOrigin(std::string_view region, uint32_t epoch) {
  return fmt::format("{}{}{}", region, kLifeSeparator, epoch);
}

bool ParseRetiredOrigin(std::string_view origin, std::string_view* region, uint32_t* epoch) {
  const size_t at = origin.find(kLifeSeparator);
  if (at == std::string_view::npos || !IsRegionName(origin.substr(0, at))) return false;
  const std::string_view digits = origin.substr(at + 1);
  uint32_t e = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), e);
  if (digits.empty() || digits[0] == '0' || ec != std::errc() ||
      ptr != digits.data() + digits.size()) {
    return false;
  }
  *region = origin.substr(0, at);
  *epoch = e;
  return true;
}

Status ValidateCounterName(std::string_view name) {
  return ValidateName("counter name", name, 1, kMaxCounterNameBytes);
}

Status ValidateKeyName(std::string_view name) {
  return ValidateName("key", name, 1, kMaxKeyNameBytes);
}

Status ValidatePurgePattern(std::string_view pattern) {
  if (pattern.empty() || (pattern[0] != '=' && pattern[0] != '*')) {
    return Status::InvalidArgument("a purge pattern starts with '=' or '*'");
  }
  return pattern[0] == '=' ? ValidateKeyName(pattern.substr(1))
                           : ValidateName("purge prefix", pattern.substr(1), 0, kMaxKeyNameBytes);
}

Status ValidateContentType(std::string_view content_type) {
  if (content_type.size() > kMaxContentTypeBytes) {
    return Status::InvalidArgument(fmt::format("content type is {} bytes; the limit is {}",
                                               content_type.size(), kMaxContentTypeBytes));
  }
  for (unsigned char c : content_type) {
    if (c < 0x20 || c > 0x7e) {
      return Status::InvalidArgument("content type must be visible ASCII");
    }
  }
  return Status::Ok();
}

std::string ETagOf(const crdt::LwwRegister& reg) {
  return fmt::format("\"{}.{}.{}\"", reg.hlc.wall_ms, reg.hlc.logical, reg.origin);
}

StatusOr<crdt::LwwRegister> MakeRegisterWrite(const crdt::LwwRegister* current, RegisterWrite& w,
                                              crdt::Hlc hlc, std::string origin, int64_t now_ms) {
  const bool live = current != nullptr && crdt::IsLive(*current, now_ms);
  if (w.if_none_match && live) return Status::FailedPrecondition("the key exists");
  if (w.if_match && (!live || ETagOf(*current) != *w.if_match)) {
    return Status::FailedPrecondition(live ? "the key's ETag is " + ETagOf(*current)
                                           : std::string("the key does not exist"));
  }
  if (w.kind == RegisterWrite::Kind::kTouch && !live) {
    return Status::NotFound("no such key (or it expired)");
  }
  crdt::LwwRegister next;
  next.hlc = hlc;
  next.origin = std::move(origin);
  switch (w.kind) {
    case RegisterWrite::Kind::kPut:
      next.value = std::move(w.value);
      next.content_type = std::move(w.content_type);
      if (w.ttl_ms > 0) next.expires_at_ms = now_ms + w.ttl_ms;
      break;
    case RegisterWrite::Kind::kDelete:
      next.deleted = true;
      break;
    case RegisterWrite::Kind::kTouch:
      next.value = current->value;
      next.content_type = current->content_type;
      next.expires_at_ms = now_ms + w.ttl_ms;
      break;
  }
  return next;
}

StatusOr<std::unique_ptr<Keyspace>> Keyspace::Open(storage::Store* store, KeyspaceOptions options,
                                                   MetricsRegistry* metrics) {
  std::unique_ptr<Keyspace> svc(new Keyspace(store, std::move(options), metrics));
  if (Status s = svc->Load(); !s.ok()) return s;
  svc->writer_ = std::thread([p = svc.get()] {
    NameThisThread("es-writer");
    if (p->options_.writer_nice > 0) LowerThisThreadPriority(p->options_.writer_nice, "writer");
    p->WriterLoop();
  });
  return svc;
}

Keyspace::Keyspace(storage::Store* store, KeyspaceOptions options, MetricsRegistry* metrics)
    : store_(store),
      options_(std::move(options)),
      shards_(new Shard[kShards]),
      open_time_(std::chrono::steady_clock::now()) {
  batch_size_ = &metrics->AddHistogram(
      "edgestate_commit_batch_size",
      "Operations committed together in one storage batch (one fdatasync in fsync mode).",
      ExponentialBuckets(1, 2, 11));
  async_unsynced_ = &metrics->AddHistogram(
      "edgestate_async_unsynced_writes",
      "Async durability: acknowledged writes not yet synced when each periodic sync ran (what a "
      "power loss at that moment would have lost).",
      ExponentialBuckets(1, 4, 10));
  increments_ok_ =
      &metrics->AddCounter("edgestate_increments_total", "Increments by outcome.", "result=\"ok\"");
  increments_rejected_ = &metrics->AddCounter("edgestate_increments_total",
                                              "Increments by outcome.", "result=\"rejected\"");
  write_errors_ = &metrics->AddCounter("edgestate_storage_write_errors_total",
                                       "Batches that storage failed to write.");
  writes_overloaded_ = &metrics->AddCounter(
      "edgestate_writes_overloaded_total",
      "Client writes refused at once because the pending-write bound was reached.");
  metrics->AddGauge("edgestate_pending_writes", "Client writes queued or being committed.",
                    [this] { return static_cast<double>(pending_writes_.load()); });
  metrics->AddGauge("edgestate_pending_write_bytes",
                    "Bytes of names and values held by client writes queued or being committed.",
                    [this] { return static_cast<double>(pending_write_bytes_.load()); });
  metrics->AddGauge("edgestate_counters", "Counters stored on this node.",
                    [this] { return static_cast<double>(size()); });
  expired_total_ =
      &metrics->AddCounter("edgestate_expired_total",
                           "Expired keys and cache entries whose value bytes the sweep dropped.");
  collected_total_ = &metrics->AddCounter(
      "edgestate_collected_total",
      "Dead records the sweep removed (tombstones and expired records applied everywhere, "
      "expired cache entries, old purges).");
  sweep_read_bytes_total_ = &metrics->AddCounter(
      "edgestate_sweep_read_bytes_total",
      "Bytes of records (keys and values) the sweep read; --sweep-mb-per-s bounds its rate.");
  purge_propagation_ = &metrics->AddHistogram(
      "edgestate_purge_propagation_seconds",
      "From a purge in another region (its clock) to its removal of this region's cache entries.",
      ExponentialBuckets(0.001, 2, 14));
  static constexpr std::array<std::string_view, 3> kTypes = {"cache", "key", "purge"};
  for (size_t i = 0; i < kTypes.size(); ++i) {
    metrics->AddGauge(
        "edgestate_records", "Register records by type and state, as the last sweep pass counted.",
        [this, i] { return static_cast<double>(live_[i].load()); },
        fmt::format("type=\"{}\",state=\"live\"", kTypes[i]));
    metrics->AddGauge(
        "edgestate_records", "Register records by type and state, as the last sweep pass counted.",
        [this, i] { return static_cast<double>(dead_[i].load()); },
        fmt::format("type=\"{}\",state=\"dead\"", kTypes[i]));
  }
  metrics->AddGauge("edgestate_storage_bytes",
                    "Bytes the store holds on disk (SST files) and in memtables.",
                    [this] { return static_cast<double>(store_->ApproximateBytes()); });
  metrics->AddGauge("edgestate_record_cache_bytes",
                    "Memory the record cache of hot keys and cache entries holds.",
                    [this] { return static_cast<double>(store_->RecordCacheBytes()); });
}

Keyspace::~Keyspace() { Stop(); }

size_t Keyspace::ShardIndex(std::string_view name) {
  return std::hash<std::string_view>{}(name) % kShards;
}

Keyspace::Shard& Keyspace::ShardFor(std::string_view name) const {
  return shards_[ShardIndex(name)];
}

Status Keyspace::Load() {
  StatusOr<uint64_t> last_change = store_->LastChangeSeq();
  if (!last_change.ok()) return last_change.status();
  uint64_t max_seq = *last_change;
  // The sweep may have removed the newest index entry: the sequence's high-water mark is kept
  // beside it, so the sequence never goes back (peers would skip the reused numbers).
  StatusOr<std::string> high = store_->Get(storage::MetaKey("last-seq"));
  if (high.ok()) {
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(high->data(), high->data() + high->size(), v);
    if (ec != std::errc() || p != high->data() + high->size()) {
      return Status::InvalidArgument("malformed sequence record \"" + *high + "\"");
    }
    max_seq = std::max(max_seq, v);
  } else if (high.status().code() != StatusCode::kNotFound) {
    return high.status();
  }
  // Without an index entry the store is empty of own writes, or it predates the change index:
  // then its counters' own writes are indexed now, which needs every counter read first.
  if (*last_change == 0) {
    rocksdb::WriteBatch migrate;
    if (Status s = LoadCounters(&migrate, &max_seq, nullptr); !s.ok()) return s;
    if (migrate.Count() > 0) {
      spdlog::info(
          "indexing the own writes of {} counters (data directory from before the change "
          "index)",
          migrate.Count());
      if (Status w = store_->Write(&migrate, /*sync=*/true); !w.ok()) return w;
    }
    FinishLoad(Status::Ok());
  }
  Status purge_scan = Status::Ok();
  Status s = store_->Scan(
      storage::RecordType::kPurge, "", "", [&](std::string_view pattern, std::string_view bytes) {
        StatusOr<storage::StoredRegister> r = storage::DecodeRegister(bytes);
        if (!r.ok()) {
          purge_scan = Status::InvalidArgument(fmt::format(
              "stored purge {:?} is unreadable: {}", std::string(pattern), r.status().message()));
          return false;
        }
        purges_[std::string(pattern)] = r->reg.hlc;
        return true;
      });
  if (!s.ok()) return s;
  if (!purge_scan.ok()) return purge_scan;
  s = store_->ForEachApplied([&](std::string_view origin, uint64_t seq, uint32_t epoch) {
    applied_[std::string(origin)] = {epoch, seq};
    return Status::Ok();
  });
  if (!s.ok()) return s;
  // The epoch is the data directory's creation time in Unix seconds, so a recreated directory
  // gets a larger one (docs/consistency.md).
  StatusOr<std::string> epoch = store_->GetOrCreateMeta(
      "epoch", std::to_string(std::max<int64_t>(1, options_.clock->NowUnixMillis() / 1000)));
  if (!epoch.ok()) return epoch.status();
  auto [ptr, ec] = std::from_chars(epoch->data(), epoch->data() + epoch->size(), epoch_);
  if (ec != std::errc() || ptr != epoch->data() + epoch->size() || epoch_ == 0) {
    return Status::InvalidArgument("malformed data-directory epoch record \"" + *epoch + "\"");
  }
  next_seq_ = max_seq + 1;
  committed_seq_.store(max_seq);
  // Only what /v1/cluster and the metrics show until the first pass completes: a damaged
  // record is reported and replaced by that pass, not a reason to refuse to start.
  StatusOr<std::string> counts = store_->Get(storage::MetaKey("record-counts"));
  if (counts.ok()) {
    StatusOr<RecordCounts> c = DecodeRecordCounts(*counts);
    if (c.ok()) {
      stored_counts_ = *c;
      PublishCounts(*c);
    } else {
      spdlog::warn("{}; the counts start from zero", c.status().message());
    }
  } else if (counts.status().code() != StatusCode::kNotFound) {
    return counts.status();
  }
  return Status::Ok();
}

Status Keyspace::LoadCounters(rocksdb::WriteBatch* migrate, uint64_t* max_seq,
                              const std::atomic<bool>* stop,
                              const std::function<void()>& after_batch) {
  // Room for every counter at once instead of rehashing all along: a counter with own writes
  // has an index entry beside its record, so about half the store's keys at most are counters.
  const uint64_t estimate = store_->EstimateNumKeys() / 2;
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard lock(shards_[i].mu);
    shards_[i].counters.reserve(estimate / kShards + 16);
  }
  // Counters go into the table in batches, a shard at a time under one lock, so that the
  // inserts into a shard follow each other while its buckets are in the CPU's cache: one at a
  // time, each insert into a table of a million counters met two or three cache misses in a
  // row (docs/benchmarks.md, "Cold start").
  struct Loaded {
    std::string name;
    crdt::PnCounter counter;
  };
  std::vector<Loaded> batch;
  batch.reserve(kLoadBatch);
  std::array<std::vector<uint32_t>, kShards> by_shard;  // Indexes into batch.
  auto publish = [&] {
    for (size_t shard = 0; shard < kShards; ++shard) {
      std::vector<uint32_t>& group = by_shard[shard];
      if (group.empty()) continue;
      auto& counters = shards_[shard].counters;
      std::lock_guard lock(shards_[shard].mu);
      for (uint32_t k : group) {
        // A state in memory is the writer's (or a read's fault-in) and never older than this.
        if (counters.try_emplace(std::move(batch[k].name), std::move(batch[k].counter)).second) {
          size_.fetch_add(1, std::memory_order_relaxed);
        }
      }
      group.clear();
    }
    batch.clear();
    if (after_batch) after_batch();
  };
  Status s = store_->ForEachCounter([&](std::string_view name, std::string_view bytes) {
    if (stop != nullptr && stop->load(std::memory_order_relaxed)) {
      return Status::Aborted("stopping");
    }
    StatusOr<crdt::PnCounter> c = storage::DecodeCounter(bytes);
    if (!c.ok()) {
      return Status::InvalidArgument(fmt::format("stored counter {:?} is unreadable: {}",
                                                 std::string(name), c.status().message()));
    }
    if (const crdt::Slot* own = c->Find(options_.region);
        migrate != nullptr && own != nullptr && own->version > 0) {
      migrate->Put(storage::ChangeKey(own->version),
                   storage::EncodeChange(storage::RecordType::kCounter, name));
      *max_seq = std::max(*max_seq, own->version);
    }
    by_shard[ShardIndex(name)].push_back(static_cast<uint32_t>(batch.size()));
    batch.push_back(Loaded{std::string(name), std::move(c).value()});
    if (batch.size() == kLoadBatch) publish();
    return Status::Ok();
  });
  publish();  // What was read before an error is as good as what was read before the end.
  return s;
}

void Keyspace::StartLoading() {
  std::call_once(load_once_, [this] {
    if (loaded() || stop_loading_.load()) return;
    loader_ = std::thread([this] {
      NameThisThread("es-loader");
      LoaderLoop();
    });
  });
}

void Keyspace::FinishLoad(const Status& s) {
  if (s.ok()) {
    load_ms_.store(std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now() - open_time_)
                       .count());
    loaded_.store(true, std::memory_order_release);
  }
  std::lock_guard lock(load_mu_);
  if (load_done_) return;  // Stop came first.
  load_done_ = true;
  load_status_ = s;
  load_cv_.notify_all();
}

void Keyspace::LoaderLoop() {
  // The load's scan lasts seconds: on the read-write handle, so that the read-only one a start
  // serves its first reads from is closed as soon as it can be (storage/store.h).
  Status s = store_->WaitWritable(storage::Store::OpenStart::kAsScheduled);
  // A load that ends within kLoadFullShare gets the core's share of any thread: the node is at
  // full speed once it ends. A longer one (a store of many millions) then leaves the core to
  // the reads, as flushes and compactions do, and takes the cycles they leave.
  const auto yield_at = std::chrono::steady_clock::now() + kLoadFullShare;
  bool yielded = false;
  auto after_batch = [&] {
    if (yielded || std::chrono::steady_clock::now() < yield_at) return;
    yielded = true;
    LowerThisThreadPriority(kLoaderNiceAfterFullShare, "loader");
  };
  if (s.ok()) s = LoadCounters(nullptr, nullptr, &stop_loading_, after_batch);
  FinishLoad(s);
  if (s.code() == StatusCode::kAborted && stop_loading_.load()) return;
  if (s.ok()) {
    spdlog::info("loaded {} counters in {} ms (reads before that went to the store)", size(),
                 load_time().count());
  } else {
    spdlog::error("loading the stored counters failed: {}", s.ToString());
  }
  if (options_.on_loaded) options_.on_loaded(s);
}

Status Keyspace::WaitLoaded() const {
  std::unique_lock lock(load_mu_);
  load_cv_.wait(lock, [this] { return load_done_; });
  return load_status_;
}

std::optional<Status> Keyspace::LoadResult() const {
  std::lock_guard lock(load_mu_);
  if (!load_done_) return std::nullopt;
  return load_status_;
}

Status Keyspace::FaultIn(std::string_view name) const {
  if (loaded()) return Status::Ok();
  Shard& shard = ShardFor(name);
  {
    std::lock_guard lock(shard.mu);
    if (shard.counters.find(name) != shard.counters.end()) return Status::Ok();
  }
  StatusOr<std::string> bytes = store_->Get(storage::CounterKey(name));
  if (!bytes.ok()) {
    if (bytes.status().code() == StatusCode::kNotFound) return Status::Ok();
    return bytes.status();
  }
  StatusOr<crdt::PnCounter> c = storage::DecodeCounter(*bytes);
  if (!c.ok()) {
    return Status::InvalidArgument(fmt::format("stored counter {:?} is unreadable: {}",
                                               std::string(name), c.status().message()));
  }
  std::lock_guard lock(shard.mu);
  // The writer may have published a newer state since the read: it stays.
  if (shard.counters.try_emplace(std::string(name), std::move(c).value()).second) {
    size_.fetch_add(1, std::memory_order_relaxed);
  }
  return Status::Ok();
}

StatusOr<CounterValue> Keyspace::Read(std::string_view name) const {
  if (Status s = FaultIn(name); !s.ok()) return s;  // Once loaded(), only an atomic load.
  Shard& shard = ShardFor(name);
  std::lock_guard lock(shard.mu);
  auto it = shard.counters.find(name);
  if (it == shard.counters.end()) return CounterValue{};
  return CounterValue{it->second.Value(), it->second.UpdatedAtMs()};
}

StatusOr<crdt::PnCounter> Keyspace::State(std::string_view name) const {
  if (Status s = FaultIn(name); !s.ok()) return s;
  Shard& shard = ShardFor(name);
  std::lock_guard lock(shard.mu);
  auto it = shard.counters.find(name);
  return it == shard.counters.end() ? crdt::PnCounter{} : it->second;
}

void Keyspace::ApplyStrong(std::string name, crdt::Slot strong, IncrementCallback done) {
  Op op;
  op.kind = Op::Kind::kStrong;
  op.name = std::move(name);
  op.strong = strong;
  op.increment_done = std::move(done);
  Enqueue(std::move(op));
}

void Keyspace::ApplyChosenRegister(std::string name, crdt::LwwRegister chosen,
                                   RegisterCallback done) {
  Op op;
  op.kind = Op::Kind::kRegister;
  op.type = storage::RecordType::kKey;
  op.name = std::move(name);
  op.chosen = std::move(chosen);
  op.register_done = std::move(done);
  Enqueue(std::move(op));
}

void Keyspace::PutRecord(std::string key, std::string value, ProbeCallback done) {
  Op op;
  op.kind = Op::Kind::kRecord;
  op.name = std::move(key);
  op.value = std::move(value);
  op.probe_done = std::move(done);
  Enqueue(std::move(op));
}

Status Keyspace::Admit(Op& op) {
  const size_t bytes = op.name.size() + op.write.value.size() + op.write.content_type.size() + 1;
  const size_t ops = pending_writes_.fetch_add(1, std::memory_order_relaxed) + 1;
  const size_t held = pending_write_bytes_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  const bool over_ops = options_.max_pending_writes > 0 && ops > options_.max_pending_writes;
  // A write larger than the byte bound on its own is still taken when nothing else waits.
  const bool over_bytes = options_.max_pending_write_bytes > 0 && held > bytes &&
                          held > options_.max_pending_write_bytes;
  if (over_ops || over_bytes) {
    Release(1, bytes);
    writes_overloaded_->Inc();
    return Status::ResourceExhausted(
        over_ops ? fmt::format("overloaded: {} writes are waiting to commit (the bound is {}); "
                               "retry later",
                               ops - 1, options_.max_pending_writes)
                 : fmt::format("overloaded: {} bytes of writes are waiting to commit (the bound "
                               "is {}); retry later",
                               held - bytes, options_.max_pending_write_bytes));
  }
  op.admitted_bytes = bytes;
  return Status::Ok();
}

void Keyspace::Release(size_t ops, size_t bytes) {
  pending_writes_.fetch_sub(ops, std::memory_order_relaxed);
  pending_write_bytes_.fetch_sub(bytes, std::memory_order_relaxed);
}

void Keyspace::Enqueue(Op op) {
  if (queue_.Push(std::move(op))) return;
  if (op.admitted_bytes > 0) Release(1, op.admitted_bytes);
  Status stopping = Status::Unavailable("node is shutting down");
  if (op.increment_done) op.increment_done(stopping);
  if (op.probe_done) op.probe_done(stopping);
  if (op.register_done) op.register_done(stopping);
}

void Keyspace::Increment(std::string name, int64_t delta, IncrementCallback done) {
  Op op;
  op.name = std::move(name);
  op.delta = delta;
  op.increment_done = std::move(done);
  if (Status s = Admit(op); !s.ok()) {
    increments_rejected_->Inc();
    return op.increment_done(std::move(s));
  }
  Enqueue(std::move(op));
}

void Keyspace::ProbeStorage(ProbeCallback done) {
  Op op;
  op.kind = Op::Kind::kProbe;
  op.probe_done = std::move(done);
  Enqueue(std::move(op));
}

void Keyspace::ApplyRemote(std::string origin, uint32_t epoch, uint64_t covers_seq,
                           std::vector<SlotUpdate> slots, ProbeCallback done,
                           std::vector<RegisterUpdate> registers) {
  // A link carries its peer's own writes of its current life; relayed ones keep theirs.
  for (RegisterUpdate& u : registers) {
    if (u.reg.origin == origin) u.reg.origin_epoch = epoch;
  }
  Op op;
  op.registers = std::move(registers);
  op.kind = Op::Kind::kApply;
  op.name = std::move(origin);
  op.epoch = epoch;
  op.covers_seq = covers_seq;
  op.slots = std::move(slots);
  op.probe_done = std::move(done);
  Enqueue(std::move(op));
}

consistency::OriginPosition Keyspace::AppliedPosition(std::string_view origin) const {
  std::lock_guard lock(applied_mu_);
  auto it = applied_.find(origin);
  return it == applied_.end() ? consistency::OriginPosition{} : it->second;
}

consistency::Position Keyspace::AppliedPositions() const {
  consistency::Position out;
  std::lock_guard lock(applied_mu_);
  out.reserve(applied_.size());
  for (const auto& [origin, at] : applied_) {  // Sorted by origin: canonical.
    if (at.seq != 0 && IsRegionName(origin)) out.push_back({origin, at});
  }
  return out;
}

uint64_t Keyspace::AppliedSeq(std::string_view origin, uint32_t epoch) const {
  consistency::OriginPosition p = AppliedPosition(origin);
  return p.epoch == epoch ? p.seq : 0;
}

Keyspace::CollectedChanges Keyspace::CollectOwnChanges(
    uint64_t after_seq, size_t max_entries, std::vector<SlotUpdate>* out, bool include_strong,
    std::vector<RegisterUpdate>* registers, size_t max_register_bytes, bool include_retired) const {
  using End = CollectedChanges::End;
  // Read before the scan: every write with seq <= committed was in a batch that completed
  // before, so the scan sees its record's entry, at that seq or (moved by a later write) above.
  const uint64_t committed = committed_seq_.load(std::memory_order_acquire);
  if (before_change_scan_) before_change_scan_();
  const CollectedChanges complete{End::kComplete, std::max(committed, after_seq),
                                  std::max(committed, after_seq)};
  auto stopped = [after_seq](End end, uint64_t last_taken) {
    return CollectedChanges{end, after_seq, std::max(after_seq, last_taken)};
  };
  const size_t out_before = out->size();
  const size_t registers_before = registers != nullptr ? registers->size() : 0;
  auto taken = [&] {
    return out->size() - out_before + (registers != nullptr ? registers->size() : 0) -
           registers_before;
  };
  std::vector<std::tuple<uint64_t, storage::RecordType, std::string>> picked;
  bool more = false;
  Status scan = store_->ForEachChange(
      after_seq, [&](uint64_t seq, storage::RecordType type, std::string_view name) {
        // One over the bound tells a full result from a truncated one.
        if (picked.size() == max_entries) {
          more = true;
          return false;
        }
        picked.emplace_back(seq, type, std::string(name));
        return true;
      });
  if (!scan.ok()) spdlog::error("reading the change index failed: {}", scan.ToString());
  // Appends a counter's entries, which stay together; false when they would pass max_entries.
  auto take_counter = [&](const std::string& name, const crdt::PnCounter& c) {
    size_t entries = 1 + (include_strong && c.Find(kStrongOrigin) != nullptr);
    if (include_retired) {
      for (const auto& [origin, slot] : c.slots()) {
        entries += origin.find(kLifeSeparator) != std::string::npos;
      }
    }
    if (taken() > 0 && taken() + entries > max_entries) return false;
    if (include_strong) {
      if (const crdt::Slot* strong = c.Find(kStrongOrigin)) {
        out->push_back(SlotUpdate{name, *strong, std::string(kStrongOrigin)});
      }
    }
    if (include_retired) {
      for (const auto& [origin, slot] : c.slots()) {
        if (origin.find(kLifeSeparator) != std::string::npos) {
          out->push_back(SlotUpdate{name, slot, origin});
        }
      }
    }
    if (const crdt::Slot* own = c.Find(options_.region)) {
      out->push_back(SlotUpdate{name, *own, {}});
    }
    return true;
  };
  size_t register_bytes = 0;
  uint64_t last_taken = after_seq;
  for (auto& [seq, type, name] : picked) {
    if (type != storage::RecordType::kCounter) {
      if (registers == nullptr) {
        last_taken = seq;
        continue;
      }
      StatusOr<std::optional<crdt::LwwRegister>> r = GetRegister(type, name);
      if (!r.ok()) {
        spdlog::error("reading record {:?} for replication failed: {}", name,
                      r.status().ToString());
        return stopped(End::kFailed, last_taken);
      }
      if (!r->has_value()) {  // Collected since.
        last_taken = seq;
        continue;
      }
      register_bytes += (*r)->value.size() + name.size();
      if (register_bytes > max_register_bytes && taken() > 0) {
        return stopped(End::kLimit, last_taken);
      }
      registers->push_back(RegisterUpdate{type, std::move(name), std::move(**r), seq});
      last_taken = seq;
      continue;
    }
    // The published state, unless the writer has not published the batch that wrote this
    // entry yet (entries above `committed` may be that fresh): then the stored one.
    {
      Shard& shard = ShardFor(name);
      std::lock_guard lock(shard.mu);
      auto it = shard.counters.find(name);
      if (it != shard.counters.end()) {
        const crdt::Slot* own = it->second.Find(options_.region);
        if (own != nullptr && own->version >= seq) {
          if (!take_counter(name, it->second)) return stopped(End::kLimit, last_taken);
          last_taken = seq;
          continue;
        }
      }
    }
    StatusOr<std::string> bytes = store_->Get(storage::CounterKey(name));
    if (!bytes.ok()) {
      spdlog::error("reading counter {:?} for replication failed: {}", name,
                    bytes.status().ToString());
      return stopped(End::kFailed, last_taken);
    }
    StatusOr<crdt::PnCounter> c = storage::DecodeCounter(*bytes);
    if (!c.ok()) {
      spdlog::error("stored counter {:?} is unreadable: {}", name, c.status().ToString());
      return stopped(End::kFailed, last_taken);
    }
    if (!take_counter(name, *c)) return stopped(End::kLimit, last_taken);
    last_taken = seq;
  }
  if (!scan.ok()) return stopped(End::kFailed, last_taken);
  if (more) return stopped(End::kLimit, last_taken);
  return complete;
}

crdt::Hlc Keyspace::ClockNow() {
  const int64_t now_ms = options_.clock->NowUnixMillis();
  std::lock_guard lock(hlc_mu_);
  return hlc_.Next(now_ms);
}

bool Keyspace::PurgedAfter(std::string_view name, crdt::Hlc started) const {
  std::lock_guard lock(purges_mu_);
  if (purges_.empty()) return false;
  std::string pattern = "=" + std::string(name);
  if (auto it = purges_.find(pattern); it != purges_.end() && it->second > started) return true;
  // Every prefix of the name, the empty one included.
  pattern[0] = '*';
  for (size_t len = 0; len <= name.size(); ++len) {
    auto it = purges_.find(std::string_view(pattern).substr(0, len + 1));
    if (it != purges_.end() && it->second > started) return true;
  }
  return false;
}

void Keyspace::WriteRegister(storage::RecordType type, std::string name, RegisterWrite write,
                             RegisterCallback done) {
  Op op;
  op.kind = Op::Kind::kRegister;
  op.type = type;
  op.name = std::move(name);
  op.write = std::move(write);
  op.register_done = std::move(done);
  if (Status s = Admit(op); !s.ok()) return op.register_done(std::move(s));
  Enqueue(std::move(op));
}

StatusOr<std::optional<crdt::LwwRegister>> Keyspace::GetRegister(storage::RecordType type,
                                                                 std::string_view name) const {
  StatusOr<std::string> bytes = store_->Get(storage::RecordKey(type, name));
  if (!bytes.ok()) {
    if (bytes.status().code() == StatusCode::kNotFound) return std::optional<crdt::LwwRegister>();
    return bytes.status();
  }
  StatusOr<storage::StoredRegister> r = storage::DecodeRegister(*bytes);
  if (!r.ok()) {
    return Status::InvalidArgument(fmt::format("stored record {:?} is unreadable: {}",
                                               std::string(name), r.status().message()));
  }
  return std::optional<crdt::LwwRegister>(std::move(r->reg));
}

Status Keyspace::ListRegisters(storage::RecordType type, std::string_view prefix,
                               std::string_view after, size_t limit, std::vector<ListedKey>* out,
                               std::string* next_after) const {
  const int64_t now_ms = options_.clock->NowUnixMillis();
  size_t visited = 0;
  bool stopped = false;
  Status decode = Status::Ok();
  next_after->clear();
  Status s = store_->Scan(type, prefix, after, [&](std::string_view name, std::string_view bytes) {
    if (out->size() == limit || visited == limit + kListScanBudget) {
      stopped = true;  // More follow: *next_after names the last one looked at.
      return false;
    }
    ++visited;
    *next_after = name;
    StatusOr<storage::StoredRegister> r = storage::DecodeRegister(bytes);
    if (!r.ok()) {
      decode = Status::InvalidArgument(fmt::format("stored record {:?} is unreadable: {}",
                                                   std::string(name), r.status().message()));
      return false;
    }
    if (!crdt::IsLive(r->reg, now_ms)) return true;
    ListedKey k;
    k.name = std::string(name);
    k.size = r->reg.value.size();
    k.reg = std::move(r->reg);
    k.reg.value.clear();
    out->push_back(std::move(k));
    return true;
  });
  if (!s.ok()) return s;
  if (!decode.ok()) return decode;
  if (!stopped) next_after->clear();  // The scan reached the end.
  return Status::Ok();
}

void Keyspace::Stop() {
  std::call_once(stop_once_, [this] {
    stop_loading_.store(true);
    std::call_once(load_once_, [] {});  // A StartLoading after this starts nothing.
    if (loader_.joinable()) loader_.join();
    queue_.Close();
    if (writer_.joinable()) writer_.join();
    FinishLoad(Status::Aborted("stopped before the counters were loaded"));
  });
}

void Keyspace::WriterLoop() {
  using SteadyClock = std::chrono::steady_clock;
  const bool async = options_.durability == Durability::kAsync;
  std::vector<Op> ops;
  uint64_t unsynced = 0;
  SteadyClock::time_point next_sync = SteadyClock::time_point::max();
  SteadyClock::time_point next_sweep = SteadyClock::now() + options_.sweep_interval;
  size_t last_batch = 0;
  auto sync_now = [&] {
    if (unsynced == 0) return;
    async_unsynced_->Observe(static_cast<double>(unsynced));
    Status s = store_->SyncWal();
    if (!s.ok()) {
      write_errors_->Inc();
      spdlog::error("periodic WAL sync failed: {}", s.ToString());
    }
    unsynced = 0;
    next_sync = SteadyClock::time_point::max();
  };
  while (true) {
    ops.clear();
    // Under load (the previous batch was large) wait briefly for as many writers to queue up
    // again; a lone writer never waits.
    size_t gather = last_batch >= kGatherThreshold ? last_batch : 1;
    bool open = queue_.PopAll(&ops, std::min(next_sync, next_sweep), gather, options_.commit_delay,
                              options_.max_batch);
    last_batch = ops.size();
    if (!ops.empty()) {
      size_t acked;
      {
        // The answers, and the releases of the answered requests, wake each I/O thread once.
        HandoffScope handoffs;
        acked = CommitBatch(ops);
        ops.clear();
      }
      if (async && acked > 0) {
        if (unsynced == 0) next_sync = SteadyClock::now() + options_.async_sync_interval;
        unsynced += acked;
      }
    }
    if (async && SteadyClock::now() >= next_sync) sync_now();
    if (!open) break;
    if (SteadyClock::now() >= next_sweep) {
      // A run that stopped at its limit continues soon, and later while writes keep the
      // writer busy (batches of kGatherThreshold or more): writes go first.
      const SweepRun run = Sweep();
      sweep_read_bytes_total_->Inc(run.bytes_read);
      const auto pause = last_batch >= kGatherThreshold ? kSweepPauseUnderLoad : kSweepPause;
      next_sweep = SteadyClock::now() + SweepPause(run.more ? pause : options_.sweep_interval,
                                                   run.bytes_read, options_.sweep_bytes_per_sec);
    }
  }
  sync_now();
}

void Keyspace::SetStableSeq(std::string_view origin, uint32_t epoch, uint64_t stable_seq) {
  std::lock_guard lock(stable_mu_);
  stable_.insert_or_assign(std::string(origin), std::make_pair(epoch, stable_seq));
}

uint64_t Keyspace::StableSeq(std::string_view origin) const {
  if (origin == options_.region && !options_.has_peers) return CommittedSeq();
  std::lock_guard lock(stable_mu_);
  auto it = stable_.find(origin);
  return it == stable_.end() ? 0 : it->second.second;
}

bool Keyspace::IsStable(std::string_view origin, uint32_t epoch, uint64_t seq) const {
  if (origin == options_.region && !options_.has_peers) {
    return (epoch == 0 || epoch == epoch_) && seq <= CommittedSeq();
  }
  std::lock_guard lock(stable_mu_);
  auto it = stable_.find(origin);
  if (it == stable_.end()) return false;
  const auto& [stable_epoch, stable_seq] = it->second;
  // A write of another life than the one the stable position counts in is never taken as
  // stable by it (its seq counts in its own life); 0 is a write stored before epochs were.
  return (epoch == 0 || epoch == stable_epoch) && seq <= stable_seq;
}

std::string Keyspace::StatusJson() const {
  auto bytes = [this](char type) {
    return store_->ApproximateRangeBytes(std::string(1, type), std::string(1, type + 1));
  };
  auto type = [&](size_t i, char t) {
    return fmt::format(R"({{"live":{},"dead":{},"bytes":{}}})", live_[i].load(), dead_[i].load(),
                       bytes(t));
  };
  SweepStats st = sweep_stats();
  return fmt::format(
      R"({{"cache":{},"keys":{},"purges":{},"sweep":{{"passes":{},"expired":{},"collected":{}}},"storage_bytes":{}}})",
      type(0, 'g'), type(1, 'k'), type(2, 'p'), st.passes, st.expired, st.collected,
      store_->ApproximateBytes());
}

std::chrono::milliseconds SweepPause(std::chrono::milliseconds pause, uint64_t bytes_read,
                                     uint64_t bytes_per_sec) {
  if (bytes_per_sec == 0) return pause;
  constexpr uint64_t kMaxMs = 24 * 3600 * 1000;  // Any run's reads are paid for within a day.
  const uint64_t whole_seconds = bytes_read / bytes_per_sec;
  if (whole_seconds >= kMaxMs / 1000) return std::max(pause, std::chrono::milliseconds(kMaxMs));
  // Rounded up, so that runs of a few bytes each still add up to the bound.
  const uint64_t ms = whole_seconds * 1000 +
                      ((bytes_read % bytes_per_sec) * 1000 + bytes_per_sec - 1) / bytes_per_sec;
  return std::max(pause, std::chrono::milliseconds(static_cast<int64_t>(ms)));
}

Keyspace::SweepStats Keyspace::sweep_stats() const {
  return SweepStats{sweep_passes_.load(), expired_total_->value(), collected_total_->value()};
}

void Keyspace::PublishCounts(const RecordCounts& counts) {
  for (size_t i = 0; i < counts.size(); ++i) {
    live_[i].store(counts[i].first);
    dead_[i].store(counts[i].second);
  }
}

Keyspace::SweepRun Keyspace::Sweep() {
  using storage::RecordType;
  SweepRun run;
  const int64_t now_ms = options_.clock->NowUnixMillis();
  size_t looked = 0;
  bool at_limit = false;
  uint64_t expired = 0, collected = 0;
  rocksdb::WriteBatch wb;
  std::vector<std::pair<std::string, crdt::Hlc>> purges_dropped;
  std::optional<RecordCounts> counts_to_store;
  static constexpr std::array<RecordType, 3> kTypes = {RecordType::kCacheEntry, RecordType::kKey,
                                                       RecordType::kPurge};
  for (size_t ti = 0; ti < kTypes.size(); ++ti) {
    const RecordType type = kTypes[ti];
    const std::string begin(1, static_cast<char>(type));
    const std::string end(1, static_cast<char>(static_cast<char>(type) + 1));
    if (sweep_cursor_ >= end) continue;
    const std::string from = std::max(sweep_cursor_, begin);
    Status s = store_->ScanRange(from, end, [&](std::string_view key, std::string_view bytes) {
      if (looked == options_.sweep_batch) {
        at_limit = true;
        sweep_cursor_ = std::string(key);
        return false;
      }
      ++looked;
      run.bytes_read += key.size() + bytes.size();
      StatusOr<storage::StoredRegister> r = storage::DecodeRegister(bytes);
      if (!r.ok()) return true;  // Unreadable: left alone (reads report it).
      if (crdt::IsLive(r->reg, now_ms)) {
        ++pass_counts_[ti].first;
        return true;
      }
      ++pass_counts_[ti].second;
      const crdt::LwwRegister& reg = r->reg;
      // A write is stable once every region applied it, or a later write of the record, from
      // its origin's stream; a write without a sequence of its origin (a strong choice a voter
      // stored for another region), from the stream that brought it here.
      const storage::StreamPosition& via = r->relay;
      const bool stable =
          type == RecordType::kCacheEntry ||
          (reg.origin_seq > 0 && IsStable(reg.origin, reg.origin_epoch, reg.origin_seq)) ||
          (reg.origin_seq == 0 && !via.region.empty() && via.seq > 0 &&
           IsStable(via.region, via.epoch, via.seq));
      if (stable) {
        wb.Delete(rocksdb::Slice(key.data(), key.size()));
        if (r->local_seq != 0) wb.Delete(storage::ChangeKey(r->local_seq));
        if (type == RecordType::kPurge) purges_dropped.emplace_back(key.substr(1), reg.hlc);
        ++collected;
      } else if (!reg.value.empty() || !reg.content_type.empty()) {
        // Expired but possibly not yet everywhere: keep the write's identity, drop its bytes.
        crdt::LwwRegister stripped = reg;
        stripped.value.clear();
        stripped.content_type.clear();
        wb.Put(rocksdb::Slice(key.data(), key.size()),
               storage::EncodeRegister(stripped, r->local_seq, r->relay));
        ++expired;
      }
      return true;
    });
    if (!s.ok()) {
      spdlog::warn("sweep scan failed: {}", s.ToString());
      return run;
    }
    if (at_limit) break;
  }
  if (!at_limit) {
    sweep_cursor_.clear();
    sweep_passes_.fetch_add(1, std::memory_order_relaxed);
    // Kept across restarts (when they changed): after one, the counts are the last pass's
    // until the next pass completes, not zero.
    if (pass_counts_ != stored_counts_) {
      wb.Put(storage::MetaKey("record-counts"), EncodeRecordCounts(pass_counts_));
      counts_to_store = pass_counts_;
    }
    PublishCounts(pass_counts_);
    pass_counts_ = {};
  }
  run.more = at_limit;
  if (wb.Count() == 0) return run;
  // Not synced: a sweep lost to a crash is redone by the next one.
  if (Status w = store_->Write(&wb, /*sync=*/false); !w.ok()) {
    write_errors_->Inc();
    spdlog::warn("sweep write failed: {}", w.ToString());
    run.more = false;
    return run;
  }
  if (counts_to_store) stored_counts_ = *counts_to_store;
  expired_total_->Inc(expired);
  collected_total_->Inc(collected);
  if (!purges_dropped.empty()) {
    std::lock_guard lock(purges_mu_);
    for (const auto& [pattern, hlc] : purges_dropped) {
      auto it = purges_.find(pattern);
      if (it != purges_.end() && it->second == hlc) purges_.erase(it);
    }
  }
  return run;
}

Status Keyspace::ValidateRemote(const Op& op) const {
  if (op.name.empty() || op.name == options_.region) {
    return Status::InvalidArgument("remote slots must come from another region");
  }
  for (const SlotUpdate& u : op.slots) {
    if (Status s = ValidateCounterName(u.name); !s.ok()) return s;
    std::string_view region;
    uint32_t epoch = 0;
    if (!u.origin.empty() && u.origin != kStrongOrigin &&
        !ParseRetiredOrigin(u.origin, &region, &epoch)) {
      return Status::InvalidArgument(
          "a remote slot may only name the strong origin or a retired life REGION@EPOCH");
    }
  }
  for (const RegisterUpdate& u : op.registers) {
    if (u.type == storage::RecordType::kKey) {
      if (Status s = ValidateKeyName(u.name); !s.ok()) return s;
    } else if (u.type == storage::RecordType::kPurge) {
      if (Status s = ValidatePurgePattern(u.name); !s.ok()) return s;
    } else {
      return Status::InvalidArgument("only keys and purges replicate");
    }
    if (u.reg.origin.empty() || u.reg.origin.size() > 64) {
      return Status::InvalidArgument("a remote register needs an origin of 1..64 bytes");
    }
    if (u.reg.value.size() > kMaxValueBytes) {
      return Status::InvalidArgument("a remote value exceeds the value limit");
    }
    if (Status s = ValidateContentType(u.reg.content_type); !s.ok()) return s;
    if (u.reg.hlc.wall_ms < 0 || u.reg.expires_at_ms < 0) {
      return Status::InvalidArgument("a remote register has a negative time");
    }
  }
  return Status::Ok();
}

struct Keyspace::StagedRegister {
  storage::RecordType type = storage::RecordType::kKey;
  std::string_view name;  // Views into the op that staged it.
  Status load = Status::Ok();
  std::optional<storage::StoredRegister> cur;  // std::nullopt: none stored.
  bool dirty = false;
  bool purge_changed = false;  // A purge whose write changed: apply its effect.
};

StatusOr<RegisterResult> Keyspace::StageLocalWrite(Op& op, StagedRegister& st, int64_t now_ms) {
  if (!st.load.ok()) return st.load;
  if (op.type == storage::RecordType::kCacheEntry && PurgedAfter(op.name, op.write.fill_started)) {
    return Status::Aborted("a purge made after this fill began covers the key");
  }
  if (op.chosen) return StageChosenWrite(op, st);
  const crdt::LwwRegister* cur = st.cur ? &st.cur->reg : nullptr;
  crdt::Hlc hlc;
  {
    std::lock_guard lock(hlc_mu_);
    hlc = hlc_.Next(now_ms, cur ? cur->hlc : crdt::Hlc{});
  }
  const bool live = cur && crdt::IsLive(*cur, now_ms);
  StatusOr<crdt::LwwRegister> made = MakeRegisterWrite(cur, op.write, hlc, options_.region, now_ms);
  if (!made.ok()) return made.status();
  crdt::LwwRegister next = std::move(made).value();
  // A purge stays in force for its retention, then the sweep collects it.
  if (op.type == storage::RecordType::kPurge) next.expires_at_ms = now_ms + kPurgeRetentionMs;
  uint64_t local_seq = st.cur ? st.cur->local_seq : 0;
  if (storage::IsReplicated(op.type)) {
    next.origin_seq = local_seq = next_seq_++;
    next.origin_epoch = epoch_;
  }
  RegisterResult result;
  result.existed = live;
  result.size = next.value.size();
  result.written = WithoutValue(next);
  st.cur = storage::StoredRegister{std::move(next), local_seq};
  st.dirty = true;
  if (op.type == storage::RecordType::kPurge) st.purge_changed = true;
  return result;
}

RegisterResult Keyspace::StageChosenWrite(Op& op, StagedRegister& st) {
  crdt::LwwRegister next = std::move(*op.chosen);
  {
    std::lock_guard lock(hlc_mu_);
    hlc_.Observe(next.hlc);
  }
  RegisterResult result;
  if (st.cur && crdt::Compare(next, st.cur->reg) != std::strong_ordering::greater) {
    // This replica has it already (applied, or relayed from another voter), or a later write.
    result.size = st.cur->reg.value.size();
    result.written = WithoutValue(st.cur->reg);
  } else {
    // A new own sequence number, so replication ships it. The write's identity in the origin's
    // sequence is given only by its origin: a voter storing another proposer's choice (a
    // re-decision) relays it with origin_seq 0.
    const uint64_t local_seq = next_seq_++;
    storage::StreamPosition relay;
    if (next.origin == options_.region) {
      next.origin_seq = local_seq;
      next.origin_epoch = epoch_;
    } else {
      relay = {options_.region, epoch_, local_seq};  // Stable once this region's stream is.
    }
    result.size = next.value.size();
    result.written = WithoutValue(next);
    st.cur = storage::StoredRegister{std::move(next), local_seq, std::move(relay)};
    st.dirty = true;
  }
  return result;
}

size_t Keyspace::CommitBatch(std::vector<Op>& ops) {
  const int64_t now_ms = options_.clock->NowUnixMillis();
  // Staged copies of every counter this batch touches; keys view into ops[i].name.
  std::unordered_map<std::string_view, std::pair<crdt::PnCounter, bool /*dirty*/>> staged;
  // Staged register records, by whole key.
  std::unordered_map<std::string, StagedRegister> staged_registers;
  std::vector<StatusOr<CounterValue>> results;
  std::vector<std::optional<StatusOr<RegisterResult>>> register_results(ops.size());
  results.reserve(ops.size());
  bool probe = false;
  // Own-origin sequence of each counter before this batch (for the change index).
  std::unordered_map<std::string_view, uint64_t> previous_own_seq;
  // Own sequence of each register record before this batch, by whole key.
  std::unordered_map<std::string_view, uint64_t> previous_register_seq;
  std::map<std::string, consistency::OriginPosition, std::less<>> applied_updates;
  auto stage = [&](std::string_view name) -> std::pair<crdt::PnCounter, bool>& {
    auto [it, inserted] = staged.try_emplace(name);
    if (inserted) {
      Shard& shard = ShardFor(name);
      std::lock_guard lock(shard.mu);
      auto existing = shard.counters.find(name);
      if (existing != shard.counters.end()) it->second.first = existing->second;
    }
    return it->second;
  };
  auto stage_register = [&](storage::RecordType type, std::string_view name) -> StagedRegister& {
    auto [it, inserted] = staged_registers.try_emplace(storage::RecordKey(type, name));
    StagedRegister& st = it->second;
    if (inserted) {
      st.type = type;
      st.name = std::string_view(it->first).substr(1);
      StatusOr<std::string> bytes = store_->Get(it->first);
      if (bytes.ok()) {
        StatusOr<storage::StoredRegister> r = storage::DecodeRegister(*bytes);
        if (r.ok()) {
          st.cur = std::move(r).value();
        } else {
          st.load = Status::InvalidArgument(fmt::format("stored record {:?} is unreadable: {}",
                                                        std::string(name), r.status().message()));
        }
      } else if (bytes.status().code() != StatusCode::kNotFound) {
        st.load = Status::Unavailable("storage is not readable: " + bytes.status().message());
      }
      previous_register_seq.try_emplace(it->first, st.cur ? st.cur->local_seq : 0);
    }
    return st;
  };
  bool own_writes = false;
  // A new own sequence number for a staged counter, so replication ships it again.
  auto bump_own = [&](std::string_view name, std::pair<crdt::PnCounter, bool>& entry) {
    crdt::PnCounter& c = entry.first;
    const crdt::Slot* own = c.Find(options_.region);
    previous_own_seq.try_emplace(name, own ? own->version : 0);
    crdt::Slot bumped = own ? *own : crdt::Slot{};
    bumped.version = next_seq_++;
    c.SetSlot(options_.region, bumped);
    own_writes = true;
    entry.second = true;
  };
  // Retiring a region's life (keyspace.h, RetiredOrigin): names staged by it live here.
  std::deque<std::string> retired_names;
  std::set<std::pair<std::string, uint32_t>, std::less<>> retired_lives;
  auto retire = [&](std::string_view region, uint32_t old_epoch) {
    if (!retired_lives.emplace(std::string(region), old_epoch).second) return;
    const std::string retired = RetiredOrigin(region, old_epoch);
    // Every counter must be in memory to be found; the loader may not be done yet.
    if (!loaded()) {
      if (Status l = LoadCounters(nullptr, nullptr, nullptr); !l.ok()) {
        spdlog::error("retiring {}: loading the counters failed: {}", retired, l.ToString());
      }
    }
    std::vector<std::string> names;
    for (size_t s = 0; s < kShards; ++s) {
      std::lock_guard lock(shards_[s].mu);
      for (const auto& [n, c] : shards_[s].counters) {
        if (c.Find(region) != nullptr) names.push_back(n);
      }
    }
    for (const auto& [n, entry] : staged) {
      if (entry.first.Find(region) != nullptr) names.emplace_back(n);
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    size_t counters = 0, records_reshipped = 0;
    for (std::string& n : names) {
      std::string_view name = retired_names.emplace_back(std::move(n));
      auto& entry = stage(name);
      std::optional<crdt::Slot> old = entry.first.TakeSlot(region);
      if (!old) continue;
      entry.first.MergeSlot(retired, *old);
      bump_own(staged.find(name)->first, entry);
      ++counters;
    }
    // The records that life wrote last: this node ships them on (it may be the only holder).
    for (storage::RecordType type : {storage::RecordType::kKey, storage::RecordType::kPurge}) {
      std::vector<std::string> written;
      Status scan = store_->Scan(
          type, "", "",
          [&](std::string_view name, std::string_view bytes) {
            StatusOr<storage::StoredRegister> r = storage::DecodeRegister(bytes);
            if (r.ok() && r->reg.origin == region) written.emplace_back(name);
            return true;
          },
          /*fill_cache=*/false);
      if (!scan.ok())
        spdlog::error("retiring {}: scanning records failed: {}", retired, scan.ToString());
      for (const std::string& name : written) {
        StagedRegister& st = stage_register(type, name);
        if (!st.load.ok() || !st.cur || st.cur->reg.origin != region) continue;
        st.cur->local_seq = next_seq_++;
        st.dirty = true;
        own_writes = true;
        ++records_reshipped;
      }
    }
    spdlog::warn(
        "region {} has a new life (its data directory was recreated): its life {} is retired in "
        "{} counters, and {} records it wrote last are shipped on from here",
        region, old_epoch, counters, records_reshipped);
  };
  std::vector<std::pair<std::string_view, std::string_view>> records;
  for (size_t i = 0; i < ops.size(); ++i) {
    Op& op = ops[i];
    if (op.kind == Op::Kind::kProbe) {
      probe = true;
      results.emplace_back(CounterValue{});
      continue;
    }
    if (op.kind == Op::Kind::kRecord) {
      records.emplace_back(op.name, op.value);
      results.emplace_back(CounterValue{});
      continue;
    }
    if (op.kind == Op::Kind::kRegister) {
      results.emplace_back(CounterValue{});
      StagedRegister& st = stage_register(op.type, op.name);
      register_results[i] = StageLocalWrite(op, st, now_ms);
      if (register_results[i]->ok() && storage::IsReplicated(op.type)) own_writes = true;
      continue;
    }
    if (op.kind == Op::Kind::kStrong) {
      if (Status f = FaultIn(op.name); !f.ok()) {
        results.emplace_back(f);
        continue;
      }
      // A new own sequence number for the counter, so replication ships it with its strong slot.
      auto& entry = stage(op.name);
      entry.first.MergeSlot(kStrongOrigin, op.strong);
      bump_own(op.name, entry);
      results.emplace_back(CounterValue{entry.first.Value(), entry.first.UpdatedAtMs()});
      continue;
    }
    if (op.kind == Op::Kind::kApply) {
      Status valid = ValidateRemote(op);
      for (size_t k = 0; valid.ok() && k < op.slots.size(); ++k) valid = FaultIn(op.slots[k].name);
      if (valid.ok()) {
        for (const RegisterUpdate& u : op.registers) {
          if (Status l = stage_register(u.type, u.name).load; !l.ok()) {
            valid = l;
            break;
          }
        }
      }
      results.emplace_back(valid.ok() ? StatusOr<CounterValue>(CounterValue{}) : valid);
      if (!valid.ok()) continue;
      // A new epoch is a new life of the origin: its sequence starts again, and the slots of
      // its previous life retire before the new life's merge.
      auto [a, fresh] = applied_updates.try_emplace(op.name);
      if (fresh) a->second = AppliedPosition(op.name);
      if (a->second.epoch != 0 && op.epoch > a->second.epoch) retire(op.name, a->second.epoch);
      if (a->second.epoch != op.epoch) a->second = {op.epoch, 0};
      a->second.seq = std::max(a->second.seq, op.covers_seq);
      for (const SlotUpdate& u : op.slots) {
        std::string_view life_region;
        uint32_t life_epoch = 0;
        if (!u.origin.empty() && ParseRetiredOrigin(u.origin, &life_region, &life_epoch)) {
          if (life_region == options_.region && life_epoch >= epoch_) continue;  // Ours: live.
          if (life_region != options_.region) {
            // A peer retired a life this node still takes for current: retire it here first.
            auto p = applied_updates.find(life_region);
            consistency::OriginPosition known =
                p != applied_updates.end() ? p->second : AppliedPosition(life_region);
            if (known.epoch == life_epoch) retire(life_region, life_epoch);
          }
        }
        auto& entry = stage(u.name);
        if (entry.first.MergeSlot(u.origin.empty() ? std::string_view(op.name) : u.origin,
                                  u.slot)) {
          entry.second = true;
        }
      }
      for (const RegisterUpdate& u : op.registers) {
        StagedRegister& st = stage_register(u.type, u.name);
        bool changed = !st.cur;
        if (changed) {
          st.cur = storage::StoredRegister{u.reg, 0};
        } else {
          changed = crdt::Merge(&st.cur->reg, u.reg);
        }
        if (!changed) continue;
        st.dirty = true;
        // A write with no sequence of its origin is stable once the stream that brought it is.
        st.cur->relay = st.cur->reg.origin_seq == 0 && u.stream_seq != 0
                            ? storage::StreamPosition{op.name, op.epoch, u.stream_seq}
                            : storage::StreamPosition{};
        if (u.type == storage::RecordType::kPurge) {
          st.purge_changed = true;
          if (now_ms >= u.reg.hlc.wall_ms) {
            purge_propagation_->Observe(static_cast<double>(now_ms - u.reg.hlc.wall_ms) / 1000.0);
          }
        }
        if (u.reg.hlc.wall_ms <= now_ms + kMaxObservedSkewMs) {
          std::lock_guard lock(hlc_mu_);
          hlc_.Observe(u.reg.hlc);
        }
      }
      continue;
    }
    if (Status f = FaultIn(op.name); !f.ok()) {
      results.emplace_back(Status::Unavailable("cannot read the counter: " + f.message()));
      continue;
    }
    auto& entry = stage(op.name);
    crdt::PnCounter& c = entry.first;
    const crdt::Slot* own = c.Find(options_.region);
    previous_own_seq.try_emplace(op.name, own ? own->version : 0);
    StatusOr<int64_t> r = c.Add(options_.region, op.delta, now_ms, next_seq_);
    if (r.ok()) {
      ++next_seq_;
      own_writes = true;
      entry.second = true;
      results.emplace_back(CounterValue{*r, c.UpdatedAtMs()});
    } else {
      results.emplace_back(r.status());
    }
  }

  rocksdb::WriteBatch wb;
  // The change index: each record's latest own write replaces its previous entry.
  auto move_index = [&wb](uint64_t prev, uint64_t next, storage::RecordType type,
                          std::string_view name) {
    if (prev == next) return;
    if (prev != 0) wb.Delete(storage::ChangeKey(prev));
    wb.Put(storage::ChangeKey(next), storage::EncodeChange(type, name));
  };
  for (const auto& [name, prev] : previous_own_seq) {
    const crdt::Slot* own = staged[name].first.Find(options_.region);
    if (own != nullptr) move_index(prev, own->version, storage::RecordType::kCounter, name);
  }
  for (const auto& [name, entry] : staged) {
    if (entry.second) wb.Put(storage::CounterKey(name), storage::EncodeCounter(entry.first));
  }
  std::vector<std::pair<std::string, crdt::Hlc>> purges_made;
  for (const auto& [key, st] : staged_registers) {
    if (!st.dirty) continue;
    if (storage::IsReplicated(st.type)) {
      move_index(previous_register_seq[key], st.cur->local_seq, st.type, st.name);
    }
    wb.Put(key, storage::EncodeRegister(*st.cur));
  }
  // After the fills above: a purge removes every cache entry it covers, this batch's included.
  for (const auto& [key, st] : staged_registers) {
    if (!st.purge_changed) continue;
    const std::string_view pattern = st.name;
    if (pattern[0] == '=') {
      wb.Delete(storage::RecordKey(storage::RecordType::kCacheEntry, pattern.substr(1)));
    } else {
      std::string begin = storage::RecordKey(storage::RecordType::kCacheEntry, pattern.substr(1));
      std::string end = PrefixEnd(begin);
      wb.DeleteRange(begin, end);
    }
    purges_made.emplace_back(std::string(pattern), st.cur->reg.hlc);
  }
  if (!purges_made.empty() && purge_listener_) {
    for (const auto& [pattern, hlc] : purges_made) purge_listener_(pattern);
  }
  for (const auto& [origin, pos] : applied_updates)
    wb.Put(storage::AppliedKey(origin), storage::EncodeApplied(pos.seq, pos.epoch));
  if (probe) wb.Put(storage::MetaKey("health-probe"), std::to_string(now_ms));
  if (own_writes) wb.Put(storage::MetaKey("last-seq"), std::to_string(next_seq_ - 1));
  for (const auto& [key, value] : records) wb.Put(key, value);
  Status write = Status::Ok();
  batch_size_->Observe(static_cast<double>(ops.size()));
  // Consensus state is synced whatever the durability mode: an acceptor's promise must survive
  // a power loss, or two values could be chosen.
  const bool sync = options_.durability == Durability::kFsync || !records.empty();
  if (wb.Count() > 0) write = store_->Write(&wb, sync);

  size_t acked = 0;
  if (write.ok()) {
    for (auto& [name, entry] : staged) {
      if (!entry.second) continue;
      Shard& shard = ShardFor(name);
      std::lock_guard lock(shard.mu);
      auto [it, inserted] = shard.counters.try_emplace(std::string(name));
      it->second = std::move(entry.first);
      if (inserted) size_.fetch_add(1, std::memory_order_relaxed);
    }
    if (!purges_made.empty()) {
      std::lock_guard lock(purges_mu_);
      for (auto& [pattern, hlc] : purges_made) {
        crdt::Hlc& h = purges_[std::move(pattern)];
        h = std::max(h, hlc);
      }
    }
    if (!applied_updates.empty()) {
      std::lock_guard lock(applied_mu_);
      for (const auto& [origin, pos] : applied_updates) applied_[origin] = pos;
    }
    // After the table: an index entry a replication snapshot sees has its state published.
    if (own_writes) committed_seq_.store(next_seq_ - 1, std::memory_order_release);
  } else {
    write_errors_->Inc();
    spdlog::error("storage write of {} records failed: {}", wb.Count(), write.ToString());
  }

  if (write.ok() && own_writes && commit_listener_) commit_listener_();
  if (write.ok() && (own_writes || !applied_updates.empty()) && progress_listener_) {
    progress_listener_();
  }

  const Status unwritable =
      write.ok() ? Status::Ok()
                 : Status::Unavailable("storage is not writable: " + write.message());
  // Before the answers: a client answered may write again at once.
  size_t admitted = 0, admitted_bytes = 0;
  for (const Op& op : ops) {
    if (op.admitted_bytes == 0) continue;
    ++admitted;
    admitted_bytes += op.admitted_bytes;
  }
  if (admitted > 0) Release(admitted, admitted_bytes);
  for (size_t i = 0; i < ops.size(); ++i) {
    Op& op = ops[i];
    if (op.kind == Op::Kind::kProbe || op.kind == Op::Kind::kRecord) {
      op.probe_done(write);
      continue;
    }
    if (op.kind == Op::Kind::kRegister) {
      StatusOr<RegisterResult>& r = *register_results[i];
      if (r.ok() && !write.ok()) {
        op.register_done(unwritable);
      } else {
        if (r.ok()) ++acked;
        op.register_done(std::move(r));
      }
      continue;
    }
    if (op.kind == Op::Kind::kStrong) {
      if (write.ok()) {
        op.increment_done(std::move(results[i]));
      } else {
        op.increment_done(unwritable);
      }
      continue;
    }
    if (op.kind == Op::Kind::kApply) {
      op.probe_done(!results[i].ok() ? results[i].status() : unwritable);
      continue;
    }
    if (!write.ok()) {
      increments_rejected_->Inc();
      op.increment_done(unwritable);
    } else if (results[i].ok()) {
      ++acked;
      increments_ok_->Inc();
      op.increment_done(std::move(results[i]));
    } else {
      increments_rejected_->Inc();
      op.increment_done(std::move(results[i]));
    }
  }
  return acked;
}

}  // namespace edgestate::service
