#include "bench/checker.h"

#include <algorithm>
#include <utility>

namespace edgestate::bench {

ReadChecker::ReadChecker(std::vector<int64_t> base, uint32_t regions, int64_t window_ns)
    : base_(std::move(base)), window_ns_(window_ns), forgotten_(base_.size(), 0) {
  out_.stale_by_region.assign(regions, 0);
  out_.reads_by_region.assign(regions, 0);
}

void ReadChecker::AddAck(uint32_t key, int64_t acked_ns) {
  if (acked_ns < horizon_) {
    forgotten_[key]++;
    return;
  }
  Times& k = recent_[key];
  // Usually the newest: insert from the back.
  auto it =
      std::upper_bound(k.times.begin() + static_cast<ptrdiff_t>(k.start), k.times.end(), acked_ns);
  k.times.insert(it, acked_ns);
  held_acks_++;
}

void ReadChecker::AddRead(const ReadRecord& r) {
  if (r.sent_ns < horizon_) return Check(r);  // Late: check now with what is known.
  held_.push_back(r);
}

std::optional<int64_t> ReadChecker::AckedBefore(uint32_t key, int64_t t) const {
  if (t < horizon_) return std::nullopt;
  auto found = recent_.find(key);
  if (found == recent_.end()) return forgotten_[key];
  const Times& k = found->second;
  auto first = k.times.begin() + static_cast<ptrdiff_t>(k.start);
  return forgotten_[key] + (std::lower_bound(first, k.times.end(), t) - first);
}

void ReadChecker::Check(const ReadRecord& r) {
  out_.reads++;
  out_.reads_by_region[r.region]++;
  std::optional<int64_t> acked = AckedBefore(r.key, r.sent_ns);
  if (!acked) {  // Sent before the horizon: cannot happen when Flush's contract is kept.
    bounds_unchecked_++;
    return;
  }
  const int64_t expected = base_[r.key] + *acked;
  if (r.value >= expected) return;
  out_.stale++;
  out_.stale_by_region[r.region]++;
  out_.missed_increments += static_cast<uint64_t>(expected - r.value);
  if (r.staleness_ms < 0) return;
  std::optional<int64_t> vouched = AckedBefore(r.key, r.sent_ns - r.staleness_ms * 1'000'000);
  if (!vouched) {
    bounds_unchecked_++;
  } else if (r.value < base_[r.key] + *vouched) {
    out_.bound_violations++;
  }
}

void ReadChecker::Flush(int64_t before_ns) {
  auto due = std::partition(held_.begin(), held_.end(),
                            [before_ns](const ReadRecord& r) { return r.sent_ns >= before_ns; });
  for (auto it = due; it != held_.end(); ++it) Check(*it);
  held_.erase(due, held_.end());
  const int64_t horizon = before_ns - window_ns_;
  if (horizon <= horizon_) return;
  // Every held read was sent at or after before_ns, so none needs an acknowledgment time
  // older than the new horizon except through a bound longer than the window.
  horizon_ = horizon;
  for (auto it = recent_.begin(); it != recent_.end();) {
    Times& k = it->second;
    auto first = k.times.begin() + static_cast<ptrdiff_t>(k.start);
    size_t n = static_cast<size_t>(std::lower_bound(first, k.times.end(), horizon_) - first);
    forgotten_[it->first] += static_cast<int64_t>(n);
    k.start += n;
    held_acks_ -= n;
    if (k.start == k.times.size()) {  // Everything forgotten: release the key's entry.
      it = recent_.erase(it);
      continue;
    }
    if (k.start > 4096 && k.start * 2 > k.times.size()) {  // Reclaim the forgotten prefix.
      k.times.erase(k.times.begin(), k.times.begin() + static_cast<ptrdiff_t>(k.start));
      k.start = 0;
    }
    ++it;
  }
}

void ReadChecker::FlushAll() {
  for (const ReadRecord& r : held_) Check(r);
  held_.clear();
}

ReadCheck CheckReads(const std::vector<ReadRecord>& reads, const std::vector<AckRecord>& acks,
                     const std::vector<int64_t>& base, uint32_t regions) {
  ReadChecker checker(base, regions, /*window_ns=*/0);
  for (const AckRecord& a : acks) checker.AddAck(a.key, a.acked_ns);
  for (const ReadRecord& r : reads) checker.AddRead(r);
  checker.FlushAll();
  return checker.result();
}

LossCheck CheckFinal(const std::vector<int64_t>& base, const std::vector<int64_t>& acked,
                     const std::vector<int64_t>& sent,
                     const std::vector<std::vector<int64_t>>& final_values) {
  LossCheck out;
  for (const auto& values : final_values) {
    int64_t lost = 0, phantom = 0;
    for (size_t k = 0; k < base.size(); ++k) {
      lost += std::max<int64_t>(0, base[k] + acked[k] - values[k]);
      phantom += std::max<int64_t>(0, values[k] - base[k] - sent[k]);
    }
    out.lost_by_region.push_back(lost);
    out.phantom_by_region.push_back(phantom);
  }
  return out;
}

}  // namespace edgestate::bench
