#include "consistency/clock_bound.h"

#include <algorithm>
#include <cstdlib>

namespace edgestate::consistency {

OffsetSample MeasureOffset(int64_t t1, int64_t t2, int64_t t3, int64_t t4) {
  OffsetSample s;
  s.offset_us = ((t2 - t1) + (t3 - t4)) / 2;
  s.delay_us = std::max<int64_t>(0, (t4 - t1) - (t3 - t2));
  return s;
}

void ClockFilter::Add(OffsetSample s) {
  samples_.push_back(s);
  if (samples_.size() > kWindow) samples_.pop_front();
}

std::optional<OffsetSample> ClockFilter::Best() const {
  if (samples_.empty()) return std::nullopt;
  return *std::min_element(
      samples_.begin(), samples_.end(),
      [](const OffsetSample& a, const OffsetSample& b) { return a.delay_us < b.delay_us; });
}

bool ClockWithin(const OffsetSample& s, int64_t max_error_us) {
  return std::llabs(s.offset_us) <= max_error_us;
}

int64_t ClockBoundUs(int64_t now_us, int64_t covered_us, int64_t max_error_us) {
  return std::max<int64_t>(0, now_us - covered_us + max_error_us);
}

}  // namespace edgestate::consistency
