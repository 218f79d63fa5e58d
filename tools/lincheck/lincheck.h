// Linearizability checking of recorded counter histories (docs/strong.md, "The checker").
//
// A history is the operations clients ran on ONE counter, each with its invocation and
// response times on one monotonic clock. An increment returns the counter's new value (it is a
// fetch-and-add), a read returns the value. An operation whose outcome is unknown (a timeout, a
// 503 after the accept was sent) is *indeterminate*: it may take effect at any point after its
// invocation, or never. Operations that certainly failed are left out by the caller, and so are
// indeterminate reads (they change nothing).
//
// Two checkers:
//  - CheckGeneral: Wing & Gong's search with Lowe's memoization on (set of linearized
//    operations, counter value). Exact for any deltas; exponential in the worst case, so it
//    stops after `max_states` configurations and answers kUnknown.
//  - CheckFast: O(n log n), for histories whose increments all add the same positive delta.
//    Each completed increment's value then names its place in the order, reads' values name
//    theirs, and gaps are filled by indeterminate increments; what remains is whether points
//    inside each operation's interval can be chosen in that order, which a greedy pass decides
//    (lincheck_test.cc cross-checks it against CheckGeneral on thousands of small histories).
// Check picks CheckFast when it applies.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace edgestate::lincheck {

inline constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

struct Op {
  bool read = false;
  int64_t delta = 0;        // Increments.
  int64_t invoke_ns = 0;    // When the request left the client.
  int64_t response_ns = 0;  // When its answer arrived; kNever when indeterminate.
  bool has_value = false;   // False only for indeterminate increments.
  int64_t value = 0;        // The value returned.
  uint64_t id = 0;          // The caller's name for it (reported in violations).
};

enum class Verdict { kOk, kViolation, kUnknown };

struct Result {
  Verdict verdict = Verdict::kOk;
  std::string explanation;          // For violations and unknowns.
  std::vector<uint64_t> offending;  // Ids of the operations the explanation names.
  uint64_t states = 0;              // Configurations explored (CheckGeneral).
  bool fast = false;                // CheckFast decided it.
};

// `initial` is the counter's value before the first operation.
Result CheckGeneral(const std::vector<Op>& history, int64_t initial,
                    uint64_t max_states = 2'000'000);
// kUnknown (with fast == false) when the history has reads only, increments of different
// deltas, or a non-positive delta: CheckGeneral is then the one to run.
Result CheckFast(const std::vector<Op>& history, int64_t initial);
Result Check(const std::vector<Op>& history, int64_t initial);

const char* VerdictName(Verdict v);

}  // namespace edgestate::lincheck
