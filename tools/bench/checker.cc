#include "bench/checker.h"

#include <algorithm>

namespace edgestate::bench {

ReadCheck CheckReads(const std::vector<ReadRecord>& reads, std::vector<AckRecord>& acks,
                     const std::vector<int64_t>& base, uint32_t regions) {
  ReadCheck out;
  out.stale_by_region.assign(regions, 0);
  out.reads_by_region.assign(regions, 0);
  std::sort(acks.begin(), acks.end(), [](const AckRecord& a, const AckRecord& b) {
    return a.key != b.key ? a.key < b.key : a.acked_ns < b.acked_ns;
  });
  // Per key, the slice of `acks` holding its acknowledgment times.
  std::vector<std::pair<size_t, size_t>> span(base.size(), {0, 0});
  for (size_t i = 0; i < acks.size();) {
    size_t j = i;
    while (j < acks.size() && acks[j].key == acks[i].key) ++j;
    span[acks[i].key] = {i, j};
    i = j;
  }
  auto acked_before = [&](uint32_t key, int64_t t) -> int64_t {
    auto [b, e] = span[key];
    auto it = std::lower_bound(acks.begin() + b, acks.begin() + e, t,
                               [](const AckRecord& a, int64_t v) { return a.acked_ns < v; });
    return it - (acks.begin() + b);
  };
  for (const ReadRecord& r : reads) {
    out.reads++;
    out.reads_by_region[r.region]++;
    int64_t expected = base[r.key] + acked_before(r.key, r.sent_ns);
    if (r.value < expected) {
      out.stale++;
      out.stale_by_region[r.region]++;
      out.missed_increments += static_cast<uint64_t>(expected - r.value);
      if (r.staleness_ms >= 0) {
        int64_t vouched = base[r.key] + acked_before(r.key, r.sent_ns - r.staleness_ms * 1'000'000);
        if (r.value < vouched) out.bound_violations++;
      }
    }
  }
  return out;
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
