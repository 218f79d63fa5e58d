#include "service/counter_service.h"

#include <fmt/format.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include "common/strings.h"

namespace edgestate::service {

Status ValidateCounterName(std::string_view name) {
  if (name.empty()) return Status::InvalidArgument("counter name is empty");
  if (name.size() > kMaxCounterNameBytes) {
    return Status::InvalidArgument(
        fmt::format("counter name is {} bytes; the limit is {}", name.size(), kMaxCounterNameBytes));
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) {
      return Status::InvalidArgument("counter name contains a control character");
    }
  }
  if (!IsValidUtf8(name)) return Status::InvalidArgument("counter name is not valid UTF-8");
  return Status::Ok();
}

StatusOr<std::unique_ptr<CounterService>> CounterService::Open(storage::Store* store,
                                                               CounterServiceOptions options,
                                                               MetricsRegistry* metrics) {
  std::unique_ptr<CounterService> svc(new CounterService(store, std::move(options), metrics));
  if (Status s = svc->Load(); !s.ok()) return s;
  svc->writer_ = std::thread([p = svc.get()] { p->WriterLoop(); });
  return svc;
}

CounterService::CounterService(storage::Store* store, CounterServiceOptions options,
                               MetricsRegistry* metrics)
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
  increments_ok_ = &metrics->AddCounter("edgestate_increments_total",
                                        "Increments by outcome.", "result=\"ok\"");
  increments_rejected_ = &metrics->AddCounter("edgestate_increments_total",
                                              "Increments by outcome.", "result=\"rejected\"");
  write_errors_ = &metrics->AddCounter("edgestate_storage_write_errors_total",
                                       "Batches that storage failed to write.");
  metrics->AddGauge("edgestate_counters", "Counters stored on this node.",
                    [this] { return static_cast<double>(size()); });
}

CounterService::~CounterService() { Stop(); }

CounterService::Shard& CounterService::ShardFor(std::string_view name) const {
  return shards_[std::hash<std::string_view>{}(name) % kShards];
}

Status CounterService::Load() {
  auto start = std::chrono::steady_clock::now();
  uint64_t estimate = store_->EstimateNumKeys();
  for (size_t i = 0; i < kShards; ++i) shards_[i].counters.reserve(estimate / kShards + 16);
  size_t n = 0;
  Status s = store_->ForEachCounter([&](std::string_view name, std::string_view bytes) {
    StatusOr<crdt::PnCounter> c = storage::DecodeCounter(bytes);
    if (!c.ok()) {
      return Status::InvalidArgument(fmt::format("stored counter {:?} is unreadable: {}",
                                                 std::string(name), c.status().message()));
    }
    ShardFor(name).counters.insert_or_assign(std::string(name), std::move(c).value());
    ++n;
    return Status::Ok();
  });
  if (!s.ok()) return s;
  size_.store(n);
  load_time_ = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  return Status::Ok();
}

CounterValue CounterService::Read(std::string_view name) const {
  Shard& shard = ShardFor(name);
  std::lock_guard lock(shard.mu);
  auto it = shard.counters.find(name);
  if (it == shard.counters.end()) return CounterValue{};
  return CounterValue{it->second.Value(), it->second.UpdatedAtMs()};
}

void CounterService::Enqueue(Op op) {
  if (queue_.Push(std::move(op))) return;
  Status stopping = Status::Unavailable("node is shutting down");
  if (op.increment_done) op.increment_done(stopping);
  if (op.probe_done) op.probe_done(stopping);
}

void CounterService::Increment(std::string name, int64_t delta, IncrementCallback done) {
  Enqueue(Op{std::move(name), delta, std::move(done), nullptr});
}

void CounterService::ProbeStorage(ProbeCallback done) {
  Enqueue(Op{std::string(), 0, nullptr, std::move(done)});
}

void CounterService::Stop() {
  std::call_once(stop_once_, [this] {
    queue_.Close();
    if (writer_.joinable()) writer_.join();
  });
}

void CounterService::WriterLoop() {
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

size_t CounterService::CommitBatch(std::vector<Op>& ops) {
  const int64_t now_ms = options_.clock->NowUnixMillis();
  // Staged copies of every counter this batch touches; keys view into ops[i].name.
  std::unordered_map<std::string_view, std::pair<crdt::PnCounter, bool /*dirty*/>> staged;
  std::vector<StatusOr<CounterValue>> results;
  results.reserve(ops.size());
  bool probe = false;
  for (Op& op : ops) {
    if (op.probe_done) {
      probe = true;
      results.emplace_back(CounterValue{});
      continue;
    }
    auto [it, inserted] = staged.try_emplace(op.name);
    if (inserted) {
      Shard& shard = ShardFor(op.name);
      std::lock_guard lock(shard.mu);
      auto existing = shard.counters.find(op.name);
      if (existing != shard.counters.end()) it->second.first = existing->second;
    }
    crdt::PnCounter& c = it->second.first;
    StatusOr<int64_t> r = c.Add(options_.region, op.delta, now_ms);
    if (r.ok()) {
      it->second.second = true;
      results.emplace_back(CounterValue{*r, c.UpdatedAtMs()});
    } else {
      results.emplace_back(r.status());
    }
  }

  rocksdb::WriteBatch wb;
  for (const auto& [name, entry] : staged) {
    if (entry.second) wb.Put(storage::CounterKey(name), storage::EncodeCounter(entry.first));
  }
  if (probe) wb.Put(storage::MetaKey("health-probe"), std::to_string(now_ms));
  Status write = Status::Ok();
  batch_size_->Observe(static_cast<double>(ops.size()));
  if (wb.Count() > 0) write = store_->Write(&wb, options_.durability == Durability::kFsync);

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
  } else {
    write_errors_->Inc();
    spdlog::error("storage write of {} records failed: {}", wb.Count(), write.ToString());
  }

  for (size_t i = 0; i < ops.size(); ++i) {
    Op& op = ops[i];
    if (op.probe_done) {
      op.probe_done(write);
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
