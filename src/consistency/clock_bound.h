// The clock-based staleness bound and the clock check behind it (docs/consistency.md).
//
// Watermark: with each heartbeat an origin says "every write I acknowledged before my wall
// time t has seq <= N" (t read before N). Once a node has applied the origin's writes up to
// N, it has covered t. If the two wall clocks differ by at most E, then at this node's wall
// time `now` a read reflects every write the origin acknowledged before now - (now - t + E):
// the clock-based bound is now - covered + E. It is valid only while the clocks agree within
// E, so each node measures each peer's offset (NTP's four timestamps on its own heartbeats and
// their acknowledgments) and uses a peer's watermark only while the measured offset is within
// E. Clock-free bounds (round trips on the monotonic clock) never depend on this.
//
// Pure: no clock reads, no I/O. ClockFilter is not thread-safe (one owner).
#pragma once

#include <cstdint>
#include <deque>
#include <optional>

namespace edgestate::consistency {

// One exchange: t1 heartbeat sent (our clock), t2 received (peer's), t3 acknowledgment sent
// (peer's), t4 received (ours); microseconds. offset: how far the peer's clock is ahead of
// ours, assuming the path takes as long each way (NTP's assumption); delay: the round trip
// without the peer's processing time. The true offset is within offset +- delay / 2.
struct OffsetSample {
  int64_t offset_us = 0;
  int64_t delay_us = 0;
};
OffsetSample MeasureOffset(int64_t t1, int64_t t2, int64_t t3, int64_t t4);

// NTP's clock filter: of the last kWindow samples, the one with the smallest delay (queues
// inflate delay and skew the offset; the quickest exchange is the most trustworthy).
class ClockFilter {
 public:
  static constexpr size_t kWindow = 8;
  void Add(OffsetSample s);
  std::optional<OffsetSample> Best() const;

 private:
  std::deque<OffsetSample> samples_;
};

// Whether a peer's clock may be trusted for watermarks: its measured offset is within E.
bool ClockWithin(const OffsetSample& s, int64_t max_error_us);

// now - covered + E, in microseconds, never negative.
int64_t ClockBoundUs(int64_t now_us, int64_t covered_us, int64_t max_error_us);

}  // namespace edgestate::consistency
