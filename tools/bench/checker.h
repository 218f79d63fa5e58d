// Consistency checks for edgebench, on what the clients observed. Pure functions.
//
// Every increment adds 1. A read of key k that left the client at time t is *stale* when its
// value is below base[k] + (increments of k acknowledged anywhere before t). It *violates its
// bound* when it also misses increments acknowledged more than its reported staleness before t.
#pragma once

#include <cstdint>
#include <vector>

namespace edgestate::bench {

struct ReadRecord {
  uint32_t key = 0;
  uint32_t region = 0;
  int64_t sent_ns = 0;  // When the request left the client (monotonic).
  int64_t value = 0;
  int64_t staleness_ms = -1;  // The server's reported bound; -1 when it gave none (or "inf").
};

struct AckRecord {
  uint32_t key = 0;
  int64_t acked_ns = 0;  // When the acknowledgment reached the client (monotonic).
};

struct ReadCheck {
  uint64_t reads = 0;
  uint64_t stale = 0;
  uint64_t bound_violations = 0;
  uint64_t missed_increments = 0;  // Summed over stale reads.
  std::vector<uint64_t> stale_by_region;
  std::vector<uint64_t> reads_by_region;
};

// `acks` is sorted in place. REQUIRES: every key < base.size(), region < regions.
ReadCheck CheckReads(const std::vector<ReadRecord>& reads, std::vector<AckRecord>& acks,
                     const std::vector<int64_t>& base, uint32_t regions);

struct LossCheck {
  // Per region: sum over keys of max(0, base + acked - final): acknowledged increments missing.
  std::vector<int64_t> lost_by_region;
  // Per region: sum over keys of max(0, final - base - sent): increments nobody sent.
  std::vector<int64_t> phantom_by_region;
};

// final_values[region][key].
LossCheck CheckFinal(const std::vector<int64_t>& base, const std::vector<int64_t>& acked,
                     const std::vector<int64_t>& sent,
                     const std::vector<std::vector<int64_t>>& final_values);

}  // namespace edgestate::bench
