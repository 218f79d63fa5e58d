#include "crdt/lww_register.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <tuple>

namespace edgestate::crdt {

std::strong_ordering Compare(const LwwRegister& a, const LwwRegister& b) {
  return std::tie(a.hlc, a.origin, a.origin_epoch, a.origin_seq, a.deleted, a.expires_at_ms,
                  a.content_type, a.value) <=> std::tie(b.hlc, b.origin, b.origin_epoch,
                                                        b.origin_seq, b.deleted, b.expires_at_ms,
                                                        b.content_type, b.value);
}

bool Merge(LwwRegister* current, const LwwRegister& incoming) {
  if (Compare(incoming, *current) <= 0) return false;
  *current = incoming;
  return true;
}

bool IsLive(const LwwRegister& r, int64_t now_ms) {
  return !r.deleted && (r.expires_at_ms == 0 || now_ms < r.expires_at_ms);
}

StatusOr<int64_t> ExpiresAt(int64_t now_ms, int64_t ttl_ms) {
  if (ttl_ms < kMinTtlMs || ttl_ms > kMaxTtlMs) {
    return Status::InvalidArgument(
        fmt::format("TTL {} ms is outside {}..{} ms (30 days)", ttl_ms, kMinTtlMs, kMaxTtlMs));
  }
  if (now_ms < 0 || now_ms > std::numeric_limits<int64_t>::max() - ttl_ms) {
    return Status::InvalidArgument(fmt::format("wall time {} ms is out of range", now_ms));
  }
  return now_ms + ttl_ms;
}

Hlc HlcClock::Next(int64_t now_ms, Hlc floor) {
  Hlc after = std::max(last_, floor);
  Hlc next;
  if (now_ms > after.wall_ms) {
    next = Hlc{now_ms, 0};
  } else if (after.logical < std::numeric_limits<uint32_t>::max()) {
    next = Hlc{after.wall_ms, after.logical + 1};
  } else {
    next = Hlc{after.wall_ms + 1, 0};  // Logical space exhausted: borrow a millisecond.
  }
  last_ = next;
  return next;
}

void HlcClock::Observe(Hlc seen) { last_ = std::max(last_, seen); }

}  // namespace edgestate::crdt
