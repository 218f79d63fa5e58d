#include "crdt/pn_counter.h"

#include <algorithm>
#include <limits>

namespace edgestate::crdt {

__int128 PnCounter::ExactValue() const {
  // At most 2^64 per slot field, so the sum of any realistic number of slots fits exactly.
  __int128 total = 0;
  for (const auto& [origin, s] : slots_) {
    total += static_cast<__int128>(s.inc) - static_cast<__int128>(s.dec);
  }
  return total;
}

int64_t PnCounter::Value() const {
  constexpr __int128 kMax = std::numeric_limits<int64_t>::max();
  constexpr __int128 kMin = std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(std::clamp(ExactValue(), kMin, kMax));
}

int64_t PnCounter::UpdatedAtMs() const {
  int64_t t = 0;
  for (const auto& [origin, s] : slots_) t = std::max(t, s.updated_at_ms);
  return t;
}

const Slot* PnCounter::Find(std::string_view origin) const {
  auto it = std::lower_bound(slots_.begin(), slots_.end(), origin,
                             [](const auto& p, std::string_view o) { return p.first < o; });
  return it != slots_.end() && it->first == origin ? &it->second : nullptr;
}

Slot& PnCounter::SlotFor(std::string_view origin) {
  auto it = std::lower_bound(slots_.begin(), slots_.end(), origin,
                             [](const auto& p, std::string_view o) { return p.first < o; });
  if (it == slots_.end() || it->first != origin) {
    it = slots_.insert(it, {std::string(origin), Slot{}});
  }
  return it->second;
}

void PnCounter::SetSlot(std::string_view origin, const Slot& slot) { SlotFor(origin) = slot; }

std::optional<Slot> PnCounter::TakeSlot(std::string_view origin) {
  auto it = std::lower_bound(slots_.begin(), slots_.end(), origin,
                             [](const auto& p, std::string_view o) { return p.first < o; });
  if (it == slots_.end() || it->first != origin) return std::nullopt;
  Slot s = it->second;
  slots_.erase(it);
  return s;
}

StatusOr<int64_t> PnCounter::Add(std::string_view origin, int64_t delta, int64_t now_ms,
                                 uint64_t seq) {
  constexpr __int128 kMax = std::numeric_limits<int64_t>::max();
  constexpr __int128 kMin = std::numeric_limits<int64_t>::min();
  const __int128 exact = ExactValue();
  const __int128 next = exact + delta;
  // Out of range after the delta: refused, unless the value was already out of range (merged
  // concurrent writes of several origins) and the delta brings it back towards int64.
  const bool towards_range = (exact > kMax && delta < 0) || (exact < kMin && delta > 0);
  if ((next > kMax || next < kMin) && !towards_range) {
    return Status::FailedPrecondition("increment would overflow the counter's int64 range");
  }
  const Slot* existing = Find(origin);
  Slot s = existing ? *existing : Slot{};
  uint64_t magnitude =
      delta < 0 ? uint64_t{0} - static_cast<uint64_t>(delta) : static_cast<uint64_t>(delta);
  uint64_t& sum = delta < 0 ? s.dec : s.inc;
  if (__builtin_add_overflow(sum, magnitude, &sum) ||
      s.version == std::numeric_limits<uint64_t>::max()) {
    return Status::FailedPrecondition("counter slot exhausted: total increments exceed 2^64");
  }
  s.version = seq != 0 ? std::max(seq, s.version) : s.version + 1;
  s.updated_at_ms = std::max(s.updated_at_ms, now_ms);
  SlotFor(origin) = s;
  return static_cast<int64_t>(std::clamp(next, kMin, kMax));
}

void PnCounter::Merge(const PnCounter& other) {
  for (const auto& [origin, theirs] : other.slots_) MergeSlot(origin, theirs);
}

bool PnCounter::MergeSlot(std::string_view origin, const Slot& theirs) {
  Slot& mine = SlotFor(origin);
  Slot before = mine;
  mine.inc = std::max(mine.inc, theirs.inc);
  mine.dec = std::max(mine.dec, theirs.dec);
  mine.version = std::max(mine.version, theirs.version);
  mine.updated_at_ms = std::max(mine.updated_at_ms, theirs.updated_at_ms);
  return !(mine == before);
}

}  // namespace edgestate::crdt
