#include "env/clock.h"

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace edgestate {
namespace {

class SystemClock final : public Clock {
 public:
  explicit SystemClock(int64_t offset_us) : offset_us_(offset_us) {}
  int64_t NowUnixMillis() const override { return NowUnixMicros() / 1000; }
  int64_t NowUnixMicros() const override {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
               .count() +
           offset_us_;
  }
  int64_t MonotonicNanos() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

 private:
  const int64_t offset_us_;
};

int64_t OffsetFromEnvironment() {
  const char* v = std::getenv("EDGESTATE_CLOCK_OFFSET_MS");
  if (v == nullptr) return 0;
  std::optional<int64_t> ms = ParseClockOffsetMs(v);
  if (!ms) {
    // Runs before any logger may exist, and a wrong clock must not go unnoticed.
    std::fprintf(stderr, "EDGESTATE_CLOCK_OFFSET_MS=\"%s\" is not an integer in +-86400000\n", v);
    std::exit(2);
  }
  return *ms * 1000;
}

}  // namespace

std::optional<int64_t> ParseClockOffsetMs(const char* text) {
  int64_t ms = 0;
  const char* end = text + std::strlen(text);
  auto [ptr, ec] = std::from_chars(text, end, ms);
  if (ptr == text || ec != std::errc() || ptr != end || ms < -86'400'000 || ms > 86'400'000) {
    return std::nullopt;
  }
  return ms;
}

const Clock* RealClock() {
  static const SystemClock* clock = new SystemClock(OffsetFromEnvironment());
  return clock;
}

}  // namespace edgestate
