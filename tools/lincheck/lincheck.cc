#include "lincheck/lincheck.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <unordered_set>

namespace edgestate::lincheck {

const char* VerdictName(Verdict v) {
  switch (v) {
    case Verdict::kOk:
      return "ok";
    case Verdict::kViolation:
      return "violation";
    case Verdict::kUnknown:
      return "unknown";
  }
  return "?";
}

namespace {

std::string Describe(const Op& o) {
  std::string end = o.response_ns == kNever ? "indeterminate" : fmt::format("{}", o.response_ns);
  if (o.read) return fmt::format("#{} read -> {} [{}, {}]", o.id, o.value, o.invoke_ns, end);
  if (!o.has_value)
    return fmt::format("#{} inc({}) -> ? [{}, {}]", o.id, o.delta, o.invoke_ns, end);
  return fmt::format("#{} inc({}) -> {} [{}, {}]", o.id, o.delta, o.value, o.invoke_ns, end);
}

Result Violation(std::string why, std::vector<uint64_t> ids) {
  Result r;
  r.verdict = Verdict::kViolation;
  r.explanation = std::move(why);
  r.offending = std::move(ids);
  return r;
}

struct ConfigHash {
  size_t operator()(const std::pair<std::vector<uint64_t>, int64_t>& c) const {
    size_t h = std::hash<int64_t>{}(c.second);
    for (uint64_t w : c.first) h = h * 1000003u ^ std::hash<uint64_t>{}(w);
    return h;
  }
};

}  // namespace

Result CheckGeneral(const std::vector<Op>& history, int64_t initial, uint64_t max_states) {
  std::vector<Op> ops = history;
  std::sort(ops.begin(), ops.end(),
            [](const Op& a, const Op& b) { return a.invoke_ns < b.invoke_ns; });
  const size_t n = ops.size();
  size_t determinate = 0;
  for (const Op& o : ops) determinate += o.response_ns != kNever ? 1 : 0;
  std::vector<uint64_t> bits((n + 63) / 64, 0);
  auto is_set = [&](size_t i) { return (bits[i / 64] >> (i % 64)) & 1; };
  auto flip = [&](size_t i) { bits[i / 64] ^= uint64_t{1} << (i % 64); };
  std::unordered_set<std::pair<std::vector<uint64_t>, int64_t>, ConfigHash> seen;

  struct Frame {
    std::vector<size_t> candidates;
    size_t next = 0;
    size_t entered_by = SIZE_MAX;  // The op linearized to reach this configuration.
    int64_t value_before = 0;      // The value before entered_by.
  };
  std::vector<Frame> stack;
  int64_t value = initial;
  size_t done = 0;  // Determinate ops linearized.
  size_t best_depth = 0;
  std::vector<size_t> best_prefix, prefix;
  Result result;

  auto enter = [&](size_t via, int64_t before) -> bool {
    // Returns false when this configuration was explored already.
    if (!seen.emplace(bits, value).second) return false;
    ++result.states;
    Frame f;
    f.entered_by = via;
    f.value_before = before;
    // An op may go next unless some op not yet linearized returned before it was invoked.
    int64_t min_response = kNever;
    for (size_t i = 0; i < n; ++i) {
      if (!is_set(i)) min_response = std::min(min_response, ops[i].response_ns);
    }
    for (size_t i = 0; i < n && ops[i].invoke_ns <= min_response; ++i) {
      if (!is_set(i)) f.candidates.push_back(i);
    }
    stack.push_back(std::move(f));
    if (prefix.size() > best_depth) {
      best_depth = prefix.size();
      best_prefix = prefix;
    }
    return true;
  };

  enter(SIZE_MAX, initial);
  while (!stack.empty()) {
    if (done == determinate) {
      result.verdict = Verdict::kOk;
      return result;
    }
    if (result.states > max_states) {
      result.verdict = Verdict::kUnknown;
      result.explanation = fmt::format("gave up after {} configurations", result.states);
      return result;
    }
    Frame& f = stack.back();
    if (f.next == f.candidates.size()) {
      // Exhausted: undo the op that led here.
      size_t via = f.entered_by;
      int64_t before = f.value_before;
      stack.pop_back();
      if (via != SIZE_MAX) {
        flip(via);
        value = before;
        if (ops[via].response_ns != kNever) --done;
        prefix.pop_back();
      }
      continue;
    }
    size_t i = f.candidates[f.next++];
    const Op& o = ops[i];
    int64_t next_value = value;
    if (o.read) {
      if (o.value != value) continue;
    } else {
      if (__builtin_add_overflow(value, o.delta, &next_value)) continue;
      if (o.has_value && o.value != next_value) continue;
    }
    const int64_t before = value;
    flip(i);
    value = next_value;
    if (o.response_ns != kNever) ++done;
    prefix.push_back(i);
    if (!enter(i, before)) {
      flip(i);
      value = before;
      if (o.response_ns != kNever) --done;
      prefix.pop_back();
    }
  }
  // No order works. Name the operations that could not follow the longest linearizable prefix.
  std::vector<bool> in_prefix(n, false);
  for (size_t i : best_prefix) in_prefix[i] = true;
  int64_t v = initial;
  for (size_t i : best_prefix) v = ops[i].read ? v : v + ops[i].delta;
  std::vector<uint64_t> ids;
  std::string stuck;
  int64_t min_response = kNever;
  for (size_t i = 0; i < n; ++i) {
    if (!in_prefix[i]) min_response = std::min(min_response, ops[i].response_ns);
  }
  for (size_t i = 0; i < n; ++i) {
    if (in_prefix[i] || ops[i].invoke_ns > min_response) continue;
    ids.push_back(ops[i].id);
    if (stuck.size() < 600) stuck += (stuck.empty() ? "" : "; ") + Describe(ops[i]);
  }
  Result r = Violation(
      fmt::format("no linearization: the longest prefix takes {} of {} operations to value {}, "
                  "and none of the operations that may follow it fits: {}",
                  best_depth, n, v, stuck),
      std::move(ids));
  r.states = result.states;
  return r;
}

Result CheckFast(const std::vector<Op>& history, int64_t initial) {
  Result unknown;
  unknown.verdict = Verdict::kUnknown;
  unknown.explanation = "the fast check needs increments of one positive delta";
  int64_t d = 0;
  for (const Op& o : history) {
    if (o.read) continue;
    if (o.delta <= 0 || (d != 0 && o.delta != d)) return unknown;
    d = o.delta;
  }
  if (d == 0) d = 1;  // Reads only: every read must return `initial`.

  // Positions: the i-th increment in the order takes the value initial + i*d.
  auto position = [&](const Op& o, int64_t* pos) {
    __int128 diff = static_cast<__int128>(o.value) - initial;
    if (diff < 0 || diff % d != 0) return false;
    *pos = static_cast<int64_t>(diff / d);
    return true;
  };
  std::map<int64_t, const Op*> incs;                // Position -> completed increment.
  std::map<int64_t, std::vector<const Op*>> reads;  // Position -> reads of that value.
  std::vector<const Op*> open;                      // Indeterminate increments.
  int64_t top = 0;
  for (const Op& o : history) {
    if (!o.read && !o.has_value) {
      open.push_back(&o);
      continue;
    }
    int64_t pos = 0;
    if (!position(o, &pos) || (!o.read && pos == 0)) {
      return Violation(fmt::format("{} returned a value no sequence of increments of {} from {} "
                                   "reaches",
                                   Describe(o), d, initial),
                       {o.id});
    }
    top = std::max(top, pos);
    if (o.read) {
      reads[pos].push_back(&o);
    } else if (auto [it, fresh] = incs.emplace(pos, &o); !fresh) {
      return Violation(fmt::format("two increments returned the same value: {} and {}",
                                   Describe(*it->second), Describe(o)),
                       {it->second->id, o.id});
    }
  }
  const int64_t gaps = top - static_cast<int64_t>(incs.size());
  if (gaps > static_cast<int64_t>(open.size())) {
    return Violation(fmt::format("values up to {} need {} more increments than the {} completed, "
                                 "but only {} others were attempted",
                                 initial + top * d, gaps, incs.size(), open.size()),
                     {});
  }
  std::sort(open.begin(), open.end(),
            [](const Op* a, const Op* b) { return a->invoke_ns < b->invoke_ns; });
  // Greedy: walk the forced order, placing each operation at the earliest point inside its
  // interval and not before the previous one's.
  int64_t t = std::numeric_limits<int64_t>::min();
  const Op* setter = nullptr;  // The operation whose invocation set t.
  size_t next_open = 0;
  auto place = [&](const Op& o) -> bool {
    if (o.invoke_ns > t) {
      t = o.invoke_ns;
      setter = &o;
    }
    return t <= o.response_ns;
  };
  auto late = [&](const Op& o) {
    std::vector<uint64_t> ids = {o.id};
    std::string why = fmt::format("{} cannot be linearized", Describe(o));
    if (setter != nullptr && setter != &o) {
      ids.push_back(setter->id);
      why += fmt::format(
          ": the order its value forces puts it after {}, which began after it "
          "had returned",
          Describe(*setter));
    }
    return Violation(std::move(why), std::move(ids));
  };
  for (int64_t p = 0; p <= top; ++p) {
    if (p > 0) {
      if (auto it = incs.find(p); it != incs.end()) {
        if (!place(*it->second)) return late(*it->second);
      } else {
        place(*open[next_open++]);
      }
    }
    if (auto it = reads.find(p); it != reads.end()) {
      const int64_t at = t;
      const Op* at_setter = setter;
      int64_t latest = t;
      const Op* latest_setter = setter;
      for (const Op* r : it->second) {
        t = at;
        setter = at_setter;
        if (!place(*r)) return late(*r);
        if (t > latest) {
          latest = t;
          latest_setter = r;
        }
      }
      t = latest;
      setter = latest_setter;
    }
  }
  Result ok;
  ok.fast = true;
  return ok;
}

Result Check(const std::vector<Op>& history, int64_t initial) {
  Result fast = CheckFast(history, initial);
  if (fast.verdict != Verdict::kUnknown) {
    fast.fast = true;
    return fast;
  }
  return CheckGeneral(history, initial);
}

}  // namespace edgestate::lincheck
