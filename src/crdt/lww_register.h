// LwwRegister: a last-writer-wins register, the CRDT behind keys, cache purges and every other
// record whose value is replaced rather than accumulated (docs/keys.md).
//
// Each write is stamped with a hybrid logical clock (wall milliseconds, logical counter) and
// the region that made it. Merge keeps the write that is greater in the total order
// (hlc, origin, origin_seq, deleted, expires_at_ms, content_type, value): hlc first, the
// origin's name as the deterministic tie-break, and the remaining fields only so that two
// different writes never compare equal. Keeping the greater of two elements of a total order is
// a join: commutative, associative and idempotent, so replicas that have seen the same writes
// hold the same write whatever the order or repetition of merges.
//
// A delete is a write (`deleted`, no value): it wins over every older write, so a replica that
// receives an older write late never resurrects the key. Expiry is an absolute wall time fixed
// by the write; a register is live only before it, on every replica alike. Pure code: no I/O,
// no clock reads (callers pass the time).
//
// Thread-safety: value types; HlcClock is not synchronized (the writer thread owns it).
#pragma once

#include <compare>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace edgestate::crdt {

struct Hlc {
  int64_t wall_ms = 0;   // Unix milliseconds.
  uint32_t logical = 0;  // Orders writes within one millisecond.

  friend auto operator<=>(const Hlc&, const Hlc&) = default;
};

struct LwwRegister {
  Hlc hlc;
  std::string origin;       // The region that made this write.
  uint64_t origin_seq = 0;  // That region's write sequence number for it (replication).
  // The life (data-directory epoch) of `origin` that made it: origin_seq counts within a life.
  uint32_t origin_epoch = 0;
  bool deleted = false;       // A tombstone: no value, no content type.
  int64_t expires_at_ms = 0;  // Unix ms after which the register is dead; 0: never.
  std::string content_type;
  std::string value;

  friend bool operator==(const LwwRegister&, const LwwRegister&) = default;
};

// The total order Merge keeps the greatest of (see above).
std::strong_ordering Compare(const LwwRegister& a, const LwwRegister& b);

// Replaces *current with `incoming` when incoming is greater. Returns true when it did.
bool Merge(LwwRegister* current, const LwwRegister& incoming);

// Not a tombstone and not expired at `now_ms`.
bool IsLive(const LwwRegister& r, int64_t now_ms);

// Dead (deleted or expired at `now_ms`): its value will never be served again.
inline bool IsDead(const LwwRegister& r, int64_t now_ms) { return !IsLive(r, now_ms); }

// TTLs accepted from clients: 1 ms to 30 days.
inline constexpr int64_t kMinTtlMs = 1;
inline constexpr int64_t kMaxTtlMs = 30LL * 24 * 3600 * 1000;
// The absolute expiry of a write made at `now_ms` with `ttl_ms`. InvalidArgument when ttl_ms
// is outside [kMinTtlMs, kMaxTtlMs] or now_ms is not a plausible Unix time (negative, or so
// large that the sum would overflow).
StatusOr<int64_t> ExpiresAt(int64_t now_ms, int64_t ttl_ms);

// A node's hybrid logical clock. Next returns a stamp greater than every stamp it returned
// before, every stamp passed to Observe, and `floor` (the current write of the key about to be
// overwritten, so a local write always wins over what it replaces even if the wall clock went
// back across a restart); its wall part is the current wall time whenever the clock allows.
class HlcClock {
 public:
  Hlc Next(int64_t now_ms, Hlc floor = {});
  // Takes note of a stamp received from another region.
  void Observe(Hlc seen);
  Hlc last() const { return last_; }

 private:
  Hlc last_;
};

}  // namespace edgestate::crdt
