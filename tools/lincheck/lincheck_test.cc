#include "lincheck/lincheck.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace edgestate::lincheck {
namespace {

Op Inc(uint64_t id, int64_t inv, int64_t resp, int64_t value, int64_t delta = 1) {
  Op o;
  o.id = id;
  o.delta = delta;
  o.invoke_ns = inv;
  o.response_ns = resp;
  o.has_value = true;
  o.value = value;
  return o;
}

Op Open(uint64_t id, int64_t inv, int64_t delta = 1) {
  Op o;
  o.id = id;
  o.delta = delta;
  o.invoke_ns = inv;
  o.response_ns = kNever;
  return o;
}

Op Read(uint64_t id, int64_t inv, int64_t resp, int64_t value) {
  Op o;
  o.id = id;
  o.read = true;
  o.invoke_ns = inv;
  o.response_ns = resp;
  o.has_value = true;
  o.value = value;
  return o;
}

// Both checkers must give `want` (the general one always applies; the fast one when the
// increments share a positive delta).
void ExpectBoth(const std::vector<Op>& h, int64_t initial, Verdict want) {
  Result g = CheckGeneral(h, initial);
  EXPECT_EQ(g.verdict, want) << "general: " << g.explanation;
  Result f = CheckFast(h, initial);
  if (f.verdict != Verdict::kUnknown) {
    EXPECT_EQ(f.verdict, want) << "fast: " << f.explanation;
  }
}

// --- Known-good histories ---

TEST(LincheckCorpus, SequentialIncrementsAndReads) {
  ExpectBoth({Inc(1, 0, 1, 1), Read(2, 2, 3, 1), Inc(3, 4, 5, 2), Read(4, 6, 7, 2)}, 0,
             Verdict::kOk);
}

TEST(LincheckCorpus, ConcurrentIncrementsInEitherOrder) {
  // Overlapping: the one that returned 1 goes first, whatever the invocation order.
  ExpectBoth({Inc(1, 0, 10, 2), Inc(2, 1, 9, 1)}, 0, Verdict::kOk);
}

TEST(LincheckCorpus, ReadConcurrentWithIncrementMaySeeEither) {
  ExpectBoth({Inc(1, 0, 10, 1), Read(2, 1, 2, 0), Read(3, 3, 4, 1)}, 0, Verdict::kOk);
}

TEST(LincheckCorpus, IndeterminateIncrementMayHaveTakenEffect) {
  ExpectBoth({Open(1, 0), Read(2, 5, 6, 1), Inc(3, 7, 8, 2)}, 0, Verdict::kOk);
}

TEST(LincheckCorpus, IndeterminateIncrementMayHaveNot) {
  ExpectBoth({Open(1, 0), Read(2, 5, 6, 0), Inc(3, 7, 8, 1)}, 0, Verdict::kOk);
}

TEST(LincheckCorpus, StartsFromTheInitialValue) {
  ExpectBoth({Read(1, 0, 1, 40), Inc(2, 2, 3, 41)}, 40, Verdict::kOk);
}

TEST(LincheckCorpus, MixedDeltasGoToTheGeneralSearch) {
  std::vector<Op> h = {Inc(1, 0, 10, 5, 5), Inc(2, 1, 9, 3, -2), Read(3, 11, 12, 3)};
  EXPECT_EQ(CheckFast(h, 0).verdict, Verdict::kUnknown);
  Result r = Check(h, 0);
  EXPECT_EQ(r.verdict, Verdict::kOk) << r.explanation;
  EXPECT_FALSE(r.fast);
}

// --- Known-bad histories ---

TEST(LincheckCorpus, StaleReadAfterAnAcknowledgedIncrement) {
  // The increment returned before the read began, yet the read missed it.
  ExpectBoth({Inc(1, 0, 1, 1), Read(2, 2, 3, 0)}, 0, Verdict::kViolation);
}

TEST(LincheckCorpus, NonMonotonicReads) {
  // Two sequential reads going backwards while an increment is in flight (DDIA fig. 9-6).
  ExpectBoth({Inc(1, 0, 100, 1), Read(2, 10, 20, 1), Read(3, 30, 40, 0)}, 0, Verdict::kViolation);
}

TEST(LincheckCorpus, DuplicateIncrementValues) {
  ExpectBoth({Inc(1, 0, 10, 1), Inc(2, 0, 10, 1)}, 0, Verdict::kViolation);
}

TEST(LincheckCorpus, LostIncrement) {
  // Two increments in sequence, the second returns as if the first never happened.
  ExpectBoth({Inc(1, 0, 1, 1), Inc(2, 2, 3, 1)}, 0, Verdict::kViolation);
}

TEST(LincheckCorpus, ValueFromNowhere) {
  ExpectBoth({Inc(1, 0, 1, 1), Read(2, 2, 3, 5)}, 0, Verdict::kViolation);
}

TEST(LincheckCorpus, IncrementsOutOfRealTimeOrder) {
  // #1 returned before #2 began, but #2 took the smaller value.
  ExpectBoth({Inc(1, 0, 1, 2), Inc(2, 2, 3, 1)}, 0, Verdict::kViolation);
}

TEST(LincheckCorpus, AViolationNamesTheOffendingOperations) {
  Result r = CheckFast({Inc(1, 0, 1, 1), Read(2, 2, 3, 0)}, 0);
  ASSERT_EQ(r.verdict, Verdict::kViolation);
  EXPECT_NE(std::find(r.offending.begin(), r.offending.end(), 2u), r.offending.end())
      << r.explanation;
  Result g = CheckGeneral({Inc(1, 0, 1, 1), Read(2, 2, 3, 0)}, 0);
  EXPECT_FALSE(g.offending.empty());
  EXPECT_FALSE(g.explanation.empty());
}

TEST(LincheckCorpus, GeneralSearchGivesUpWithinItsBudget) {
  // Many concurrent increments with unknown outcomes and a read no subset explains: every
  // subset is a configuration, so a small budget runs out.
  std::vector<Op> h;
  for (uint64_t i = 0; i < 24; ++i) h.push_back(Open(i, 0, static_cast<int64_t>(i % 3) + 2));
  h.push_back(Read(100, 1, 2, 1));
  Result r = CheckGeneral(h, 0, 1000);
  EXPECT_EQ(r.verdict, Verdict::kUnknown);
}

// --- The fast check agrees with the exact search ---

// A random history of `procs` clients, each running operations one after another; every
// operation takes effect at a random point inside its interval (so the history is
// linearizable), some increments end indeterminate (taking effect or not), and with
// `corrupt` one returned value is changed.
std::vector<Op> RandomHistory(std::mt19937_64& rng, int procs, int ops, bool corrupt,
                              double open_share = 0.15) {
  struct Event {
    int64_t at;
    size_t op;
  };
  std::vector<Op> h;
  std::vector<Event> effects;
  std::uniform_int_distribution<int64_t> gap(0, 5), len(1, 20);
  std::uniform_real_distribution<double> u(0, 1);
  for (int p = 0; p < procs; ++p) {
    int64_t t = gap(rng);
    for (int i = 0; i < ops; ++i) {
      Op o;
      o.id = h.size();
      o.read = u(rng) < 0.4;
      o.delta = 1;
      o.invoke_ns = t;
      o.response_ns = t + len(rng);
      o.has_value = true;
      std::uniform_int_distribution<int64_t> point(o.invoke_ns, o.response_ns);
      bool open = !o.read && u(rng) < open_share;
      bool effect = !open || u(rng) < 0.5;
      if (effect) effects.push_back({point(rng), h.size()});
      if (open) {
        o.response_ns = kNever;
        o.has_value = false;
      }
      t = (open ? o.invoke_ns + 25 : o.response_ns) + gap(rng);
      h.push_back(o);
      if (open) break;  // A client whose request timed out stops (it cannot know the outcome).
    }
  }
  std::sort(effects.begin(), effects.end(),
            [](const Event& a, const Event& b) { return a.at < b.at; });
  int64_t v = 0;
  for (const Event& e : effects) {
    Op& o = h[e.op];
    if (!o.read) v += o.delta;
    if (o.has_value) o.value = v;
  }
  if (corrupt && !h.empty()) {
    std::uniform_int_distribution<size_t> pick(0, h.size() - 1);
    Op& o = h[pick(rng)];
    if (o.has_value) o.value += u(rng) < 0.5 ? 1 : -1;
  }
  return h;
}

TEST(LincheckCrossCheck, FastAgreesWithGeneralOnSmallHistories) {
  std::mt19937_64 rng(20261130);
  int violations = 0, oks = 0;
  for (int round = 0; round < 3000; ++round) {
    const bool corrupt = round % 2 == 1;
    std::vector<Op> h = RandomHistory(rng, 1 + round % 4, 1 + round % 5, corrupt);
    Result g = CheckGeneral(h, 0);
    ASSERT_NE(g.verdict, Verdict::kUnknown);
    Result f = CheckFast(h, 0);
    ASSERT_NE(f.verdict, Verdict::kUnknown);
    ASSERT_EQ(f.verdict, g.verdict) << "round " << round << ": fast says " << f.explanation
                                    << " / general says " << g.explanation;
    if (!corrupt) {
      ASSERT_EQ(g.verdict, Verdict::kOk) << "round " << round << ": " << g.explanation;
    }
    (g.verdict == Verdict::kOk ? oks : violations)++;
  }
  // The corpus exercises both outcomes.
  EXPECT_GT(violations, 500);
  EXPECT_GT(oks, 1500);
}

TEST(LincheckScale, FastCheckHandlesLongHistories) {
  std::mt19937_64 rng(7);
  std::vector<Op> h = RandomHistory(rng, 64, 3000, false, 0.0005);
  ASSERT_GT(h.size(), 100000u);
  Result r = CheckFast(h, 0);
  EXPECT_EQ(r.verdict, Verdict::kOk) << r.explanation;
  size_t i = h.size() / 2;
  while (!h[i].has_value) ++i;
  h[i].value += 1;
  EXPECT_EQ(CheckFast(h, 0).verdict, Verdict::kViolation);
}

}  // namespace
}  // namespace edgestate::lincheck
