#include "strong/caspaxos.h"

#include <gtest/gtest.h>

#include "service/keyspace.h"

namespace edgestate::strong {
namespace {

pb::Ballot B(uint64_t n, uint64_t id) {
  pb::Ballot b;
  b.set_n(n);
  b.set_id(id);
  return b;
}

pb::Register WithStrong(int64_t total) {
  crdt::PnCounter c;
  EXPECT_TRUE(c.Add(service::kStrongOrigin, total, 1).ok());
  pb::Register r;
  SetRegisterCounter(c, &r);
  return r;
}

TEST(BallotTest, OrderedByNumberThenId) {
  EXPECT_TRUE(BallotLess(B(0, 0), B(1, 0)));
  EXPECT_TRUE(BallotLess(B(1, 5), B(2, 0)));
  EXPECT_TRUE(BallotLess(B(2, 0), B(2, 1)));
  EXPECT_FALSE(BallotLess(B(2, 1), B(2, 1)));
  EXPECT_TRUE(BallotEqual(B(3, 4), B(3, 4)));
  EXPECT_TRUE(BallotLess(pb::Ballot(), B(0, 1)));  // Absent is below every real ballot.
}

TEST(AcceptorTest, PromisesOnlyHigherBallots) {
  pb::AcceptorRecord rec;
  bool changed = false;
  pb::Reply r = OnPrepare(&rec, B(1, 1), &changed);
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(changed);
  EXPECT_FALSE(r.has_accepted());
  // The same ballot again, or a lower one, is refused with the promise named.
  r = OnPrepare(&rec, B(1, 1), &changed);
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(changed);
  EXPECT_TRUE(BallotEqual(r.promised(), B(1, 1)));
  r = OnPrepare(&rec, B(0, 9), &changed);
  EXPECT_FALSE(r.ok());
}

TEST(AcceptorTest, AcceptRespectsPromiseAndPromisesNext) {
  pb::AcceptorRecord rec;
  bool changed = false;
  OnPrepare(&rec, B(5, 1), &changed);
  // A lower ballot's accept is refused once a higher one is promised.
  pb::Reply r = OnAccept(&rec, B(4, 2), WithStrong(1), B(5, 2), &changed);
  EXPECT_FALSE(r.ok());
  EXPECT_FALSE(changed);
  EXPECT_FALSE(rec.has_accepted());
  r = OnAccept(&rec, B(5, 1), WithStrong(3), B(6, 1), &changed);
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(changed);
  EXPECT_TRUE(BallotEqual(rec.promised(), B(6, 1)));
  // The next ballot is promised: an accept at it needs no prepare, and a prepare below it fails.
  EXPECT_FALSE(OnPrepare(&rec, B(6, 0), &changed).ok());
  r = OnPrepare(&rec, B(7, 2), &changed);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(BallotEqual(r.accepted(), B(5, 1)));
  EXPECT_EQ(RegisterCounter(r.value()).Value(), 3);
  // The fast accept of the old proposer now fails: another proposer prepared in between.
  EXPECT_FALSE(OnAccept(&rec, B(6, 1), WithStrong(4), B(7, 1), &changed).ok());
}

TEST(ApplyBatchTest, IncrementsReturnTheirValuesInOrder) {
  pb::Register current = WithStrong(10);
  std::vector<StrongOp> ops = {{false, 1}, {true, 0}, {false, 5}, {false, -2}};
  BatchResult r = ApplyBatch(current, crdt::PnCounter{}, "lhr/1", 1, ops, 1000);
  ASSERT_EQ(r.results.size(), 4u);
  EXPECT_EQ(r.results[0].value, 11);
  EXPECT_EQ(r.results[1].value, 11);
  EXPECT_EQ(r.results[2].value, 16);
  EXPECT_EQ(r.results[3].value, 14);
  EXPECT_FALSE(r.replayed);
  EXPECT_EQ(RegisterCounter(r.next).Value(), 14);
}

TEST(ApplyBatchTest, FoldsWeakStateAsAJoin) {
  crdt::PnCounter weak;
  ASSERT_TRUE(weak.Add("syd", 7, 1).ok());
  BatchResult r = ApplyBatch(WithStrong(2), weak, "lhr/1", 1, {{false, 1}}, 1000);
  EXPECT_EQ(r.results[0].value, 10);  // 2 strong + 7 weak + 1.
  // Folding an older weak state again changes nothing (the join is idempotent).
  BatchResult again = ApplyBatch(r.next, weak, "lhr/1", 2, {{true, 0}}, 1000);
  EXPECT_EQ(again.results[0].value, 10);
}

TEST(ApplyBatchTest, ARetriedBatchIsAnsweredFromTheRegisterNotAppliedTwice) {
  std::vector<StrongOp> ops = {{false, 1}, {false, 1}};
  BatchResult first = ApplyBatch(WithStrong(0), crdt::PnCounter{}, "lhr/1", 7, ops, 1000);
  // The accept of `first` may have been chosen; the retry finds its outcome in the register.
  BatchResult retry = ApplyBatch(first.next, crdt::PnCounter{}, "lhr/1", 7, ops, 2000);
  EXPECT_TRUE(retry.replayed);
  EXPECT_EQ(retry.results[0].value, 1);
  EXPECT_EQ(retry.results[1].value, 2);
  EXPECT_EQ(RegisterCounter(retry.next).Value(), 2);
  // Another proposer's batch with the same number is a different batch.
  BatchResult other = ApplyBatch(first.next, crdt::PnCounter{}, "fra/1", 7, ops, 2000);
  EXPECT_FALSE(other.replayed);
  EXPECT_EQ(other.results[1].value, 4);
  // Both outcomes are kept; a new life of lhr replaces lhr's old one.
  EXPECT_EQ(other.next.outcomes_size(), 2);
  BatchResult reborn = ApplyBatch(other.next, crdt::PnCounter{}, "lhr/2", 1, ops, 3000);
  EXPECT_EQ(reborn.next.outcomes_size(), 2);
  for (const auto& o : reborn.next.outcomes()) EXPECT_NE(o.proposer(), "lhr/1");
}

TEST(ApplyRoundTest, AHandedOverBatchIsAppliedOnceUnderItsOwnIdentity) {
  // fra proposed batch 4 (+1, +1); its accept may or may not have been chosen. The leader
  // finishes it in a round of its own (batch 9: +10).
  std::vector<Segment> round = {{"lhr/1", 9, {{false, 10}}},
                                {"fra/1", 4, {{false, 1}, {false, 1}}}};
  // Not chosen before: both segments apply, in order, and both are recorded.
  BatchResult fresh = ApplyRound(WithStrong(0), crdt::PnCounter{}, round, 1000);
  ASSERT_EQ(fresh.results.size(), 3u);
  EXPECT_EQ(fresh.results[0].value, 10);
  EXPECT_EQ(fresh.results[1].value, 11);
  EXPECT_EQ(fresh.results[2].value, 12);
  EXPECT_EQ(fresh.next.outcomes_size(), 2);
  // Chosen before (fra's own accept won): fra's segment is answered from the record and not
  // applied again; the leader's applies.
  BatchResult fra_won =
      ApplyBatch(WithStrong(0), crdt::PnCounter{}, "fra/1", 4, {{false, 1}, {false, 1}}, 500);
  BatchResult finish = ApplyRound(fra_won.next, crdt::PnCounter{}, round, 1000);
  EXPECT_FALSE(finish.replayed);
  EXPECT_EQ(finish.results[0].value, 12);  // The leader's +10 on top of fra's +2.
  EXPECT_EQ(finish.results[1].value, 1);   // fra's, as first chosen.
  EXPECT_EQ(finish.results[2].value, 2);
  EXPECT_EQ(RegisterCounter(finish.next).Value(), 12);
  // The whole round again (the leader's retry after its own accept was lost): all replayed.
  BatchResult again = ApplyRound(finish.next, crdt::PnCounter{}, round, 2000);
  EXPECT_TRUE(again.replayed);
  EXPECT_EQ(again.results[0].value, 12);
  EXPECT_EQ(RegisterCounter(again.next).Value(), 12);
}

TEST(ApplyRoundTest, ARecordOfAnotherLengthAnswersNothing) {
  // fra's batch 4 was chosen with one operation; a segment under the same identity with two
  // (a batch split across rounds) must not take that operation's value for either of its own.
  BatchResult one = ApplyBatch(WithStrong(0), crdt::PnCounter{}, "fra/1", 4, {{false, 1}}, 500);
  BatchResult two =
      ApplyRound(one.next, crdt::PnCounter{}, {{"fra/1", 4, {{false, 1}, {false, 1}}}}, 1000);
  ASSERT_EQ(two.results.size(), 2u);
  for (const OpResult& r : two.results) {
    EXPECT_TRUE(r.unknown);
    EXPECT_FALSE(r.failed);
  }
  EXPECT_TRUE(two.replayed);
  EXPECT_EQ(RegisterCounter(two.next).Value(), 1);
}

TEST(ApplyRoundTest, ABatchTheRegisterMovedPastIsNeverAppliedAgain) {
  // fra's batch 4 was chosen, then its batch 5 (which replaced 4's record); batch 4 reaches the
  // leader late. It may have been chosen, so it is not applied: its outcome is unknown.
  BatchResult b4 = ApplyBatch(WithStrong(0), crdt::PnCounter{}, "fra/1", 4, {{false, 1}}, 500);
  BatchResult b5 = ApplyBatch(b4.next, crdt::PnCounter{}, "fra/1", 5, {{false, 1}}, 600);
  std::vector<Segment> late = {{"lhr/1", 9, {{false, 10}}}, {"fra/1", 4, {{false, 1}}}};
  BatchResult r = ApplyRound(b5.next, crdt::PnCounter{}, late, 1000);
  ASSERT_EQ(r.results.size(), 2u);
  EXPECT_EQ(r.results[0].value, 12);  // The leader's own segment applies.
  EXPECT_TRUE(r.results[1].unknown);
  EXPECT_EQ(RegisterCounter(r.next).Value(), 12);
  // So is a batch of an earlier life of fra, once a later life recorded one.
  BatchResult reborn = ApplyBatch(r.next, crdt::PnCounter{}, "fra/2", 1, {{false, 1}}, 1100);
  BatchResult old = ApplyRound(reborn.next, crdt::PnCounter{}, {{"fra/1", 6, {{false, 1}}}}, 1200);
  EXPECT_TRUE(old.results[0].unknown);
  EXPECT_TRUE(old.replayed);
  EXPECT_EQ(RegisterCounter(old.next).Value(), 13);
  // An earlier batch number of a later life is not superseded by an older life's record.
  BatchResult next_life =
      ApplyRound(b5.next, crdt::PnCounter{}, {{"fra/2", 1, {{false, 1}}}}, 1300);
  EXPECT_FALSE(next_life.results[0].unknown);
  EXPECT_EQ(next_life.results[0].value, 3);
}

TEST(ApplyBatchTest, AnOverflowingIncrementFailsAlone) {
  pb::Register current = WithStrong(std::numeric_limits<int64_t>::max() - 1);
  BatchResult r =
      ApplyBatch(current, crdt::PnCounter{}, "lhr/1", 1, {{false, 5}, {false, 1}, {true, 0}}, 1000);
  EXPECT_TRUE(r.results[0].failed);
  EXPECT_FALSE(r.results[1].failed);
  EXPECT_EQ(r.results[2].value, std::numeric_limits<int64_t>::max());
}

// --- Keys ---

StrongOp KeyRead() { return StrongOp{true, 0, {}}; }

StrongOp KeyPut(std::string value, std::optional<std::string> if_match = std::nullopt,
                bool if_none_match = false, int64_t ttl_ms = 0) {
  StrongOp op;
  op.write.kind = service::RegisterWrite::Kind::kPut;
  op.write.value = std::move(value);
  op.write.content_type = "text/plain";
  op.write.if_match = std::move(if_match);
  op.write.if_none_match = if_none_match;
  op.write.ttl_ms = ttl_ms;
  return op;
}

StrongOp KeyDelete(std::optional<std::string> if_match = std::nullopt) {
  StrongOp op;
  op.write.kind = service::RegisterWrite::Kind::kDelete;
  op.write.if_match = std::move(if_match);
  return op;
}

BatchResult KeyRound(const pb::Register& current, std::vector<StrongOp> ops, int64_t now_ms,
                     const std::optional<crdt::LwwRegister>& weak = std::nullopt,
                     std::string proposer = "lhr/1", uint64_t batch = 1) {
  StatusOr<BatchResult> r =
      ApplyKeyRound(current, weak, {{std::move(proposer), batch, ops}}, now_ms, crdt::Hlc{}, "lhr");
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? std::move(r).value() : BatchResult{};
}

TEST(KeyInstanceTest, KeysAndCountersNeverShareAnInstance) {
  EXPECT_EQ(KeyOfInstance(KeyInstance("a")), std::optional<std::string_view>("a"));
  EXPECT_FALSE(KeyOfInstance("a").has_value());
  EXPECT_TRUE(ValidateInstance("a").ok());
  EXPECT_TRUE(ValidateInstance(KeyInstance("any key/with spaces")).ok());
  EXPECT_FALSE(ValidateInstance(KeyInstance("")).ok());
  EXPECT_FALSE(ValidateInstance(KeyInstance("a\x01")).ok());
  EXPECT_FALSE(ValidateInstance("").ok());
}

TEST(ApplyKeyRoundTest, ConditionsAreCheckedInOrderWithinTheRound) {
  // Create, a second create (refused), a read, a write conditional on the first write's ETag,
  // and one conditional on a stale ETag (refused).
  BatchResult first = KeyRound(pb::Register{}, {KeyPut("a", std::nullopt, true)}, 1000);
  ASSERT_TRUE(first.results[0].status.ok());
  const std::string etag1 = service::ETagOf(*first.results[0].reg);
  EXPECT_FALSE(first.results[0].existed);
  EXPECT_EQ(first.results[0].size, 1u);
  BatchResult r = KeyRound(first.next,
                           {KeyPut("x", std::nullopt, true), KeyRead(), KeyPut("b", etag1),
                            KeyPut("c", etag1), KeyRead()},
                           1001, std::nullopt, "lhr/1", 2);
  ASSERT_EQ(r.results.size(), 5u);
  EXPECT_EQ(r.results[0].status.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.results[1].reg->value, "a");
  EXPECT_TRUE(r.results[2].status.ok());
  EXPECT_TRUE(r.results[2].existed);
  EXPECT_EQ(r.results[3].status.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.results[4].reg->value, "b");
  EXPECT_EQ(service::ETagOf(*r.results[4].reg), service::ETagOf(*r.results[2].reg));
  // Every write is stamped above the one it replaced.
  EXPECT_LT(first.results[0].reg->hlc, r.results[2].reg->hlc);
  StatusOr<std::optional<crdt::LwwRegister>> stored = RegisterKey(r.next);
  ASSERT_TRUE(stored.ok() && *stored);
  EXPECT_EQ((*stored)->value, "b");
  EXPECT_EQ((*stored)->origin, "lhr");
}

TEST(ApplyKeyRoundTest, DeletedAndExpiredKeysAreNotFoundAndCanBeCreatedAgain) {
  BatchResult put = KeyRound(pb::Register{}, {KeyPut("a", std::nullopt, false, 100)}, 1000);
  // Expired at 1100: a read is NotFound, If-None-Match succeeds, If-Match fails.
  BatchResult later = KeyRound(put.next, {KeyRead(), KeyPut("x", "\"1000.0.lhr\"")}, 1100,
                               std::nullopt, "lhr/1", 2);
  EXPECT_EQ(later.results[0].status.code(), StatusCode::kNotFound);
  EXPECT_EQ(later.results[1].status.code(), StatusCode::kFailedPrecondition);
  BatchResult again = KeyRound(put.next, {KeyPut("b", std::nullopt, true), KeyDelete(), KeyRead()},
                               1100, std::nullopt, "lhr/1", 3);
  EXPECT_TRUE(again.results[0].status.ok());
  EXPECT_TRUE(again.results[1].status.ok());
  EXPECT_TRUE(again.results[1].existed);
  EXPECT_EQ(again.results[2].status.code(), StatusCode::kNotFound);
}

TEST(ApplyKeyRoundTest, TheProposersReplicaIsJoinedInByTheLwwOrder) {
  BatchResult put = KeyRound(pb::Register{}, {KeyPut("strong")}, 1000);
  crdt::LwwRegister weak;
  weak.hlc = crdt::Hlc{5000, 0};
  weak.origin = "fra";
  weak.value = "weak";
  // A later weak write wins; an older one does not.
  BatchResult r = KeyRound(put.next, {KeyRead()}, 2000, weak, "lhr/1", 2);
  EXPECT_EQ(r.results[0].reg->value, "weak");
  weak.hlc = crdt::Hlc{10, 0};
  r = KeyRound(put.next, {KeyRead(), KeyPut("next")}, 2000, weak, "lhr/1", 3);
  EXPECT_EQ(r.results[0].reg->value, "strong");
  EXPECT_LT(put.results[0].reg->hlc, r.results[1].reg->hlc);
}

TEST(ApplyKeyRoundTest, ARetriedBatchIsAnsweredFromTheRecordNotAppliedTwice) {
  BatchResult first = KeyRound(pb::Register{}, {KeyPut("a", std::nullopt, true), KeyRead()}, 1000);
  BatchResult retry = KeyRound(first.next, {KeyPut("a", std::nullopt, true), KeyRead()}, 2000);
  EXPECT_TRUE(retry.replayed);
  ASSERT_EQ(retry.results.size(), 2u);
  // Applied again, the create would fail: the record answers with the write it made.
  EXPECT_TRUE(retry.results[0].status.ok());
  EXPECT_EQ(service::ETagOf(*retry.results[0].reg), service::ETagOf(*first.results[0].reg));
  EXPECT_EQ(retry.results[1].reg->value, "a");
  // Once the key moved on, a replayed read cannot say what it read: unknown, never a guess.
  BatchResult moved = KeyRound(first.next, {KeyPut("b")}, 3000, std::nullopt, "fra/1", 1);
  BatchResult late = KeyRound(moved.next, {KeyPut("a", std::nullopt, true), KeyRead()}, 4000);
  EXPECT_TRUE(late.results[0].status.ok());
  EXPECT_TRUE(late.results[1].unknown);
}

TEST(ApplyKeyRoundTest, AMalformedRegisterIsRefused) {
  pb::Register bad;
  bad.set_key("\xff\xff not a record");
  StatusOr<BatchResult> r =
      ApplyKeyRound(bad, std::nullopt, {{"lhr/1", 1, {KeyRead()}}}, 1000, crdt::Hlc{}, "lhr");
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace edgestate::strong
