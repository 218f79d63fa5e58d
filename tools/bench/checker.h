// Consistency checks for edgebench, on what the clients observed. Pure functions.
//
// Every increment adds 1. A read of key k that left the client at time t is *stale* when its
// value is below base[k] + (increments of k acknowledged anywhere before t). It *violates its
// bound* when it also misses increments acknowledged more than its reported staleness before t.
#pragma once

#include <cstdint>
#include <optional>
#include <unordered_map>
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

// The streaming form, for runs of any length: memory holds the reads not yet checked and the
// acknowledgment times of the last `window_ns` before the latest Flush, plus a count per key.
//
// A read sent at t is checked against the acknowledgments before t, so it may be checked once
// every acknowledgment received before t has been added; the caller says when with Flush.
// The stale check is exact. A bound check needs the acknowledgments before t - bound; when that
// reaches further back than the window, the read is counted in `bounds_unchecked` instead.
// Not thread-safe.
class ReadChecker {
 public:
  // REQUIRES: window_ns >= 0; every later key < base.size(), region < regions.
  ReadChecker(std::vector<int64_t> base, uint32_t regions, int64_t window_ns);

  // Acknowledgments may arrive in any order (they are kept sorted per key).
  void AddAck(uint32_t key, int64_t acked_ns);
  // Held until a Flush covers its send time.
  void AddRead(const ReadRecord& r);
  // Checks the held reads sent before `before_ns`. REQUIRES: every acknowledgment received
  // before `before_ns` has been added. Then forgets acknowledgments older than
  // before_ns - window_ns (keeping their count).
  void Flush(int64_t before_ns);
  // Checks every held read. REQUIRES: every acknowledgment has been added.
  void FlushAll();

  const ReadCheck& result() const { return out_; }
  uint64_t bounds_unchecked() const { return bounds_unchecked_; }
  size_t held_reads() const { return held_.size(); }
  size_t held_acks() const { return held_acks_; }

 private:
  // The acknowledgment times of one key since the horizon.
  struct Times {
    std::vector<int64_t> times;  // Sorted; times[0..start) are forgotten.
    size_t start = 0;
  };
  // Acknowledgments of `key` before t; nullopt when t < horizon_ (no longer known exactly).
  std::optional<int64_t> AckedBefore(uint32_t key, int64_t t) const;
  void Check(const ReadRecord& r);

  const std::vector<int64_t> base_;
  const int64_t window_ns_;
  std::vector<int64_t> forgotten_;  // Per key: acknowledgments before horizon_ (counted only).
  // Only keys acknowledged since the horizon, so memory and Flush follow the traffic.
  std::unordered_map<uint32_t, Times> recent_;
  std::vector<ReadRecord> held_;
  size_t held_acks_ = 0;
  int64_t horizon_ = INT64_MIN;  // Every acknowledgment before this is only counted.
  uint64_t bounds_unchecked_ = 0;
  ReadCheck out_;
};

// All at once (tests, short runs). REQUIRES: every key < base.size(), region < regions.
ReadCheck CheckReads(const std::vector<ReadRecord>& reads, const std::vector<AckRecord>& acks,
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
