// Consistency levels per request (docs/consistency.md): what a client asks for, parsed from
// the request; pure code, safe from any thread.
//
//   local    the node's current state, with its staleness bound (the default)
//   bounded  as local, and the bound is at most max_staleness_ms
//   session  the node has applied everything the client's session token names
//   strong   linearizable (not available yet: 503 strong_unavailable)
//
// A request names its level with the query parameter `consistency=LEVEL` or the header
// `Edgestate-Consistency: LEVEL`, and bounded's M with `max_staleness_ms=M` (query) or
// `Edgestate-Consistency: bounded; max_staleness_ms=M` (header).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "common/status.h"

namespace edgestate::consistency {

enum class Level { kLocal, kBounded, kSession, kStrong };

std::string_view LevelName(Level level);
// InvalidArgument naming the allowed values.
StatusOr<Level> ParseLevel(std::string_view name);

inline constexpr int64_t kMaxStalenessLimitMs = 86'400'000;  // One day.

struct Requested {
  Level level = Level::kLocal;
  std::optional<int64_t> max_staleness_ms;  // Set exactly when level == kBounded.
};

// Reads the level from `target`'s query string and from `header` (the Edgestate-Consistency
// value; empty when absent); `default_level` when neither names one. InvalidArgument (a
// message saying what is allowed) for an unknown level, a query and a header that disagree,
// bounded without a well-formed M (an integer in 0..kMaxStalenessLimitMs), or M with another
// level. A default of kBounded is not allowed (it would need a default M).
StatusOr<Requested> ParseRequested(std::string_view target, std::string_view header,
                                   Level default_level);

}  // namespace edgestate::consistency
