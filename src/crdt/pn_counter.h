// PnCounter: a positive-negative counter CRDT with one slot per origin region.
//
// Each origin only ever grows its own slot: `inc` and `dec` are monotone sums of the positive
// and negative deltas it accepted, and `version` is the origin's (node-wide, increasing) write
// sequence number of the slot's latest write, which replication uses as a version vector entry. The
// value is sum(inc) - sum(dec). Merge takes, per origin, the field-wise maximum, which is a join:
// it is commutative, associative and idempotent, so replicas that have seen the same writes hold
// the same state whatever the order or repetition of merges. Pure code: no I/O, no clock reads.
//
// Range: Add never accepts a delta that would move the value outside int64 (or a slot beyond
// uint64), so Value() is exact for every state one origin produces. Merging the concurrent
// writes of several origins can still take the exact sum outside int64 (two regions each adding
// 2^62 + 2^62 locally); Value() then saturates at the nearest int64 bound instead of wrapping,
// and Add accepts only deltas that bring the value back towards the range.
//
// Thread-safety: a value type; callers synchronize.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace edgestate::crdt {

struct Slot {
  uint64_t inc = 0;           // Sum of positive deltas accepted at this origin.
  uint64_t dec = 0;           // Sum of magnitudes of negative deltas accepted at this origin.
  uint64_t version = 0;       // The origin's write sequence number at this slot's last write.
  int64_t updated_at_ms = 0;  // Wall time of the latest of those writes (Unix ms).

  friend bool operator==(const Slot&, const Slot&) = default;
};

class PnCounter {
 public:
  using Slots = std::vector<std::pair<std::string, Slot>>;  // Sorted by origin, unique.

  // sum(inc) - sum(dec), clamped to int64 (see Range above).
  int64_t Value() const;
  // sum(inc) - sum(dec), exactly.
  __int128 ExactValue() const;
  // The latest write time over all slots (0 when never written).
  int64_t UpdatedAtMs() const;

  // Adds `delta` to `origin`'s slot, stamps it with sequence `seq` (0: the slot's version + 1)
  // and returns the new value (clamped like Value()). On FailedPrecondition (the value would
  // leave int64, or the slot's sum would exceed uint64) nothing changes.
  // REQUIRES: seq == 0 or seq > the slot's current version.
  StatusOr<int64_t> Add(std::string_view origin, int64_t delta, int64_t now_ms, uint64_t seq = 0);

  // Joins `other` into this counter (field-wise max per origin).
  void Merge(const PnCounter& other);
  // Joins one slot of `origin` (field-wise max). Returns true when anything changed.
  bool MergeSlot(std::string_view origin, const Slot& slot);

  // nullptr when `origin` has no slot.
  const Slot* Find(std::string_view origin) const;
  // Replaces `origin`'s slot; used when decoding stored or received state.
  void SetSlot(std::string_view origin, const Slot& slot);
  // Removes `origin`'s slot and returns it; nullopt when there was none. Not a CRDT operation:
  // the caller keeps the state it stood for elsewhere (a region's retired life, keyspace.h).
  std::optional<Slot> TakeSlot(std::string_view origin);

  const Slots& slots() const { return slots_; }
  bool empty() const { return slots_.empty(); }

  friend bool operator==(const PnCounter&, const PnCounter&) = default;

 private:
  Slot& SlotFor(std::string_view origin);

  Slots slots_;
};

}  // namespace edgestate::crdt
