// Clock: the one seam through which edgestate reads time, so tests can drive it.
//
// Thread-safety: all methods of RealClock and FakeClock are safe from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>

namespace edgestate {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time, Unix epoch, milliseconds. May jump (NTP); never use it for durations.
  virtual int64_t NowUnixMillis() const = 0;
  // The same wall clock in microseconds.
  virtual int64_t NowUnixMicros() const = 0;
  // Monotonic time in nanoseconds from an arbitrary origin; use it for durations and deadlines.
  virtual int64_t MonotonicNanos() const = 0;
};

// The process-wide real clock. Never null; never destroyed. Its wall time is the system's plus
// EDGESTATE_CLOCK_OFFSET_MS (an integer, read once, default 0): the seam through which a test or
// a fault campaign runs a node with a skewed clock. The monotonic clock is never offset.
const Clock* RealClock();

// Parses an EDGESTATE_CLOCK_OFFSET_MS value: an integer in -86400000..86400000 ms.
std::optional<int64_t> ParseClockOffsetMs(const char* text);

// A clock that moves only when told to.
class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t unix_ms = 1'700'000'000'000) : unix_ms_(unix_ms) {}
  int64_t NowUnixMillis() const override { return unix_ms_.load(); }
  int64_t NowUnixMicros() const override { return unix_ms_.load() * 1000; }
  int64_t MonotonicNanos() const override { return mono_ns_.load(); }
  void AdvanceMillis(int64_t ms) {
    unix_ms_ += ms;
    mono_ns_ += ms * 1'000'000;
  }

 private:
  std::atomic<int64_t> unix_ms_;
  std::atomic<int64_t> mono_ns_{0};
};

}  // namespace edgestate
