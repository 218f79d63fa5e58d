#include "service/keyspace.h"

#include <fmt/format.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <tuple>

#include "common/strings.h"

namespace edgestate::service {

Status ValidateCounterName(std::string_view name) {
  if (name.empty()) return Status::InvalidArgument("counter name is empty");
  if (name.size() > kMaxCounterNameBytes) {
    return Status::InvalidArgument(fmt::format("counter name is {} bytes; the limit is {}",
                                               name.size(), kMaxCounterNameBytes));
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) {
      return Status::InvalidArgument("counter name contains a control character");
    }
  }
  if (!IsValidUtf8(name)) return Status::InvalidArgument("counter name is not valid UTF-8");
  return Status::Ok();
}

StatusOr<std::unique_ptr<Keyspace>> Keyspace::Open(storage::Store* store, KeyspaceOptions options,
                                                   MetricsRegistry* metrics) {
  std::unique_ptr<Keyspace> svc(new Keyspace(store, std::move(options), metrics));
  if (Status s = svc->Load(); !s.ok()) return s;
  svc->writer_ = std::thread([p = svc.get()] { p->WriterLoop(); });
  return svc;
}

Keyspace::Keyspace(storage::Store* store, KeyspaceOptions options, MetricsRegistry* metrics)
    : store_(store), options_(std::move(options)), shards_(new Shard[kShards]) {
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
  metrics->AddGauge("edgestate_counters", "Counters stored on this node.",
                    [this] { return static_cast<double>(size()); });
}

Keyspace::~Keyspace() { Stop(); }

Keyspace::Shard& Keyspace::ShardFor(std::string_view name) const {
  return shards_[std::hash<std::string_view>{}(name) % kShards];
}

Status Keyspace::Load() {
  auto start = std::chrono::steady_clock::now();
  uint64_t estimate = store_->EstimateNumKeys();
  for (size_t i = 0; i < kShards; ++i) shards_[i].counters.reserve(estimate / kShards + 16);
  size_t n = 0;
  uint64_t max_seq = 0;
  Status s = store_->ForEachCounter([&](std::string_view name, std::string_view bytes) {
    StatusOr<crdt::PnCounter> c = storage::DecodeCounter(bytes);
    if (!c.ok()) {
      return Status::InvalidArgument(fmt::format("stored counter {:?} is unreadable: {}",
                                                 std::string(name), c.status().message()));
    }
    if (const crdt::Slot* own = c->Find(options_.region); own && own->version > 0) {
      changelog_.emplace(own->version, std::string(name));
      max_seq = std::max(max_seq, own->version);
    }
    ShardFor(name).counters.insert_or_assign(std::string(name), std::move(c).value());
    ++n;
    return Status::Ok();
  });
  if (!s.ok()) return s;
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
  size_.store(n);
  load_time_ = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  return Status::Ok();
}

CounterValue Keyspace::Read(std::string_view name) const {
  Shard& shard = ShardFor(name);
  std::lock_guard lock(shard.mu);
  auto it = shard.counters.find(name);
  if (it == shard.counters.end()) return CounterValue{};
  return CounterValue{it->second.Value(), it->second.UpdatedAtMs()};
}

crdt::PnCounter Keyspace::State(std::string_view name) const {
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

void Keyspace::PutRecord(std::string key, std::string value, ProbeCallback done) {
  Op op;
  op.kind = Op::Kind::kRecord;
  op.name = std::move(key);
  op.value = std::move(value);
  op.probe_done = std::move(done);
  Enqueue(std::move(op));
}

void Keyspace::Enqueue(Op op) {
  if (queue_.Push(std::move(op))) return;
  Status stopping = Status::Unavailable("node is shutting down");
  if (op.increment_done) op.increment_done(stopping);
  if (op.probe_done) op.probe_done(stopping);
}

void Keyspace::Increment(std::string name, int64_t delta, IncrementCallback done) {
  Op op;
  op.name = std::move(name);
  op.delta = delta;
  op.increment_done = std::move(done);
  Enqueue(std::move(op));
}

void Keyspace::ProbeStorage(ProbeCallback done) {
  Op op;
  op.kind = Op::Kind::kProbe;
  op.probe_done = std::move(done);
  Enqueue(std::move(op));
}

void Keyspace::ApplyRemote(std::string origin, uint32_t epoch, uint64_t covers_seq,
                           std::vector<SlotUpdate> slots, ProbeCallback done) {
  Op op;
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

consistency::Position Keyspace::AppliedPositions(const std::vector<std::string>& origins) const {
  consistency::Position out(origins.size());
  std::lock_guard lock(applied_mu_);
  for (size_t i = 0; i < origins.size(); ++i) {
    auto it = applied_.find(origins[i]);
    if (it != applied_.end()) out[i] = it->second;
  }
  return out;
}

uint64_t Keyspace::AppliedSeq(std::string_view origin, uint32_t epoch) const {
  consistency::OriginPosition p = AppliedPosition(origin);
  return p.epoch == epoch ? p.seq : 0;
}

uint64_t Keyspace::CollectOwnChanges(uint64_t after_seq, size_t max_entries,
                                     std::vector<SlotUpdate>* out, bool include_strong) const {
  std::vector<std::pair<uint64_t, std::string>> picked;
  uint64_t covers;
  {
    std::lock_guard lock(changelog_mu_);
    covers = committed_seq_.load(std::memory_order_acquire);
    for (auto it = changelog_.upper_bound(after_seq); it != changelog_.end(); ++it) {
      if (picked.size() == max_entries) {
        covers = picked.back().first;  // Truncated: complete only up to the last one taken.
        break;
      }
      picked.emplace_back(it->first, it->second);
    }
  }
  if (covers < after_seq) covers = after_seq;
  for (auto& [seq, name] : picked) {
    Shard& shard = ShardFor(name);
    std::lock_guard lock(shard.mu);
    auto it = shard.counters.find(name);
    if (it == shard.counters.end()) continue;
    if (include_strong) {
      if (const crdt::Slot* strong = it->second.Find(kStrongOrigin)) {
        out->push_back(SlotUpdate{name, *strong, std::string(kStrongOrigin)});
      }
    }
    if (const crdt::Slot* own = it->second.Find(options_.region)) {
      out->push_back(SlotUpdate{std::move(name), *own, {}});
    }
  }
  return covers;
}

void Keyspace::Stop() {
  std::call_once(stop_once_, [this] {
    queue_.Close();
    if (writer_.joinable()) writer_.join();
  });
}

void Keyspace::WriterLoop() {
  using SteadyClock = std::chrono::steady_clock;
  const bool async = options_.durability == Durability::kAsync;
  std::vector<Op> ops;
  uint64_t unsynced = 0;
  SteadyClock::time_point next_sync = SteadyClock::time_point::max();
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
    bool open = queue_.PopAll(&ops, next_sync, gather, options_.commit_delay);
    last_batch = ops.size();
    if (!ops.empty()) {
      size_t acked = CommitBatch(ops);
      if (async && acked > 0) {
        if (unsynced == 0) next_sync = SteadyClock::now() + options_.async_sync_interval;
        unsynced += acked;
      }
    }
    if (async && SteadyClock::now() >= next_sync) sync_now();
    if (!open) break;
  }
  sync_now();
}

Status Keyspace::ValidateRemote(const Op& op) const {
  if (op.name.empty() || op.name == options_.region) {
    return Status::InvalidArgument("remote slots must come from another region");
  }
  for (const SlotUpdate& u : op.slots) {
    if (Status s = ValidateCounterName(u.name); !s.ok()) return s;
    if (!u.origin.empty() && u.origin != kStrongOrigin) {
      return Status::InvalidArgument("a remote slot may only name the strong origin");
    }
  }
  return Status::Ok();
}

size_t Keyspace::CommitBatch(std::vector<Op>& ops) {
  const int64_t now_ms = options_.clock->NowUnixMillis();
  // Staged copies of every counter this batch touches; keys view into ops[i].name.
  std::unordered_map<std::string_view, std::pair<crdt::PnCounter, bool /*dirty*/>> staged;
  std::vector<StatusOr<CounterValue>> results;
  results.reserve(ops.size());
  bool probe = false;
  // Own-origin sequence of each counter before this batch (for the changelog).
  std::unordered_map<std::string_view, uint64_t> previous_own_seq;
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
  bool own_writes = false;
  std::vector<std::pair<std::string_view, std::string_view>> records;
  for (Op& op : ops) {
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
    if (op.kind == Op::Kind::kStrong) {
      // A new own sequence number for the counter, so replication ships it with its strong slot.
      auto& entry = stage(op.name);
      crdt::PnCounter& c = entry.first;
      const crdt::Slot* own = c.Find(options_.region);
      previous_own_seq.try_emplace(op.name, own ? own->version : 0);
      c.MergeSlot(kStrongOrigin, op.strong);
      crdt::Slot bumped = own ? *own : crdt::Slot{};
      bumped.version = next_seq_++;
      c.SetSlot(options_.region, bumped);
      own_writes = true;
      entry.second = true;
      results.emplace_back(CounterValue{c.Value(), c.UpdatedAtMs()});
      continue;
    }
    if (op.kind == Op::Kind::kApply) {
      Status valid = ValidateRemote(op);
      results.emplace_back(valid.ok() ? StatusOr<CounterValue>(CounterValue{}) : valid);
      if (!valid.ok()) continue;
      for (const SlotUpdate& u : op.slots) {
        auto& entry = stage(u.name);
        if (entry.first.MergeSlot(u.origin.empty() ? std::string_view(op.name) : u.origin,
                                  u.slot)) {
          entry.second = true;
        }
      }
      // A new epoch is a new life of the origin: its sequence starts again.
      auto [a, fresh] = applied_updates.try_emplace(op.name);
      if (fresh) a->second = AppliedPosition(op.name);
      if (a->second.epoch != op.epoch) a->second = {op.epoch, 0};
      a->second.seq = std::max(a->second.seq, op.covers_seq);
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
  for (const auto& [name, entry] : staged) {
    if (entry.second) wb.Put(storage::CounterKey(name), storage::EncodeCounter(entry.first));
  }
  for (const auto& [origin, pos] : applied_updates)
    wb.Put(storage::AppliedKey(origin), storage::EncodeApplied(pos.seq, pos.epoch));
  if (probe) wb.Put(storage::MetaKey("health-probe"), std::to_string(now_ms));
  for (const auto& [key, value] : records) wb.Put(key, value);
  Status write = Status::Ok();
  batch_size_->Observe(static_cast<double>(ops.size()));
  // Consensus state is synced whatever the durability mode: an acceptor's promise must survive
  // a power loss, or two values could be chosen.
  const bool sync = options_.durability == Durability::kFsync || !records.empty();
  if (wb.Count() > 0) write = store_->Write(&wb, sync);

  size_t acked = 0;
  if (write.ok()) {
    std::vector<std::tuple<uint64_t, uint64_t, std::string_view>> changelog_moves;
    for (const auto& [name, prev] : previous_own_seq) {
      const crdt::Slot* own = staged[name].first.Find(options_.region);
      if (own != nullptr && own->version != prev)
        changelog_moves.emplace_back(prev, own->version, name);
    }
    for (auto& [name, entry] : staged) {
      if (!entry.second) continue;
      Shard& shard = ShardFor(name);
      std::lock_guard lock(shard.mu);
      auto [it, inserted] = shard.counters.try_emplace(std::string(name));
      it->second = std::move(entry.first);
      if (inserted) size_.fetch_add(1, std::memory_order_relaxed);
    }
    if (!applied_updates.empty()) {
      std::lock_guard lock(applied_mu_);
      for (const auto& [origin, pos] : applied_updates) applied_[origin] = pos;
    }
    if (own_writes) {
      // After the table: an entry a replication snapshot sees has its state published.
      std::lock_guard lock(changelog_mu_);
      for (const auto& [prev, next, name] : changelog_moves) {
        if (prev != 0) changelog_.erase(prev);
        changelog_.emplace(next, std::string(name));
      }
      committed_seq_.store(next_seq_ - 1, std::memory_order_release);
    }
  } else {
    write_errors_->Inc();
    spdlog::error("storage write of {} records failed: {}", wb.Count(), write.ToString());
  }

  if (write.ok() && own_writes && commit_listener_) commit_listener_();
  if (write.ok() && (own_writes || !applied_updates.empty()) && progress_listener_) {
    progress_listener_();
  }

  for (size_t i = 0; i < ops.size(); ++i) {
    Op& op = ops[i];
    if (op.kind == Op::Kind::kProbe || op.kind == Op::Kind::kRecord) {
      op.probe_done(write);
      continue;
    }
    if (op.kind == Op::Kind::kStrong) {
      if (write.ok()) {
        op.increment_done(std::move(results[i]));
      } else {
        op.increment_done(Status::Unavailable("storage is not writable: " + write.message()));
      }
      continue;
    }
    if (op.kind == Op::Kind::kApply) {
      op.probe_done(!results[i].ok() ? results[i].status()
                    : write.ok()
                        ? Status::Ok()
                        : Status::Unavailable("storage is not writable: " + write.message()));
      continue;
    }
    if (!write.ok()) {
      increments_rejected_->Inc();
      op.increment_done(Status::Unavailable("storage is not writable: " + write.message()));
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
