#include "strong/caspaxos.h"

#include <charconv>
#include <utility>

#include "service/keyspace.h"

namespace edgestate::strong {

bool BallotLess(const pb::Ballot& a, const pb::Ballot& b) {
  return std::make_pair(a.n(), a.id()) < std::make_pair(b.n(), b.id());
}

bool BallotEqual(const pb::Ballot& a, const pb::Ballot& b) {
  return a.n() == b.n() && a.id() == b.id();
}

pb::Reply OnPrepare(pb::AcceptorRecord* rec, const pb::Ballot& b, bool* changed) {
  pb::Reply reply;
  *changed = false;
  if (!BallotLess(rec->promised(), b)) {
    *reply.mutable_promised() = rec->promised();
    return reply;
  }
  *rec->mutable_promised() = b;
  *changed = true;
  reply.set_ok(true);
  if (rec->has_accepted()) {
    *reply.mutable_accepted() = rec->accepted();
    *reply.mutable_value() = rec->value();
  }
  return reply;
}

pb::Reply OnAccept(pb::AcceptorRecord* rec, const pb::Ballot& b, const pb::Register& value,
                   const pb::Ballot& next, bool* changed) {
  pb::Reply reply;
  *changed = false;
  if (BallotLess(b, rec->promised())) {
    *reply.mutable_promised() = rec->promised();
    return reply;
  }
  *rec->mutable_accepted() = b;
  *rec->mutable_value() = value;
  *rec->mutable_promised() = BallotLess(b, next) ? next : b;
  *changed = true;
  reply.set_ok(true);
  return reply;
}

crdt::PnCounter RegisterCounter(const pb::Register& r) {
  crdt::PnCounter c;
  for (const pb::Slot& s : r.slots()) {
    c.MergeSlot(s.origin(), crdt::Slot{s.inc(), s.dec(), s.version(), s.updated_at_ms()});
  }
  return c;
}

void SetRegisterCounter(const crdt::PnCounter& c, pb::Register* r) {
  r->clear_slots();
  for (const auto& [origin, slot] : c.slots()) {
    pb::Slot* s = r->add_slots();
    s->set_origin(origin);
    s->set_inc(slot.inc);
    s->set_dec(slot.dec);
    s->set_version(slot.version);
    s->set_updated_at_ms(slot.updated_at_ms);
  }
}

namespace {

std::string_view RegionOf(std::string_view proposer) {
  return proposer.substr(0, proposer.find('/'));
}

// The incarnation of "REGION/INCARNATION" (0 when there is none).
uint64_t LifeOf(std::string_view proposer) {
  const size_t slash = proposer.find('/');
  uint64_t life = 0;
  if (slash == std::string_view::npos) return 0;
  std::from_chars(proposer.data() + slash + 1, proposer.data() + proposer.size(), life);
  return life;
}

// A record of the same region made after `seg`'s batch: a later batch of the same life, or
// any batch of a later life.
bool Supersedes(const pb::BatchOutcome& o, const Segment& seg) {
  if (RegionOf(o.proposer()) != RegionOf(seg.proposer)) return false;
  const uint64_t a = LifeOf(o.proposer()), b = LifeOf(seg.proposer);
  return a > b || (a == b && o.batch() > seg.batch);
}

}  // namespace

BatchResult ApplyBatch(const pb::Register& current, const crdt::PnCounter& weak,
                       std::string_view proposer, uint64_t batch, const std::vector<StrongOp>& ops,
                       int64_t now_ms) {
  return ApplyRound(current, weak, {Segment{std::string(proposer), batch, ops}}, now_ms);
}

BatchResult ApplyRound(const pb::Register& current, const crdt::PnCounter& weak,
                       const std::vector<Segment>& segments, int64_t now_ms) {
  auto recorded = [&current](const Segment& seg) -> const pb::BatchOutcome* {
    for (const pb::BatchOutcome& o : current.outcomes()) {
      if (o.proposer() == seg.proposer && o.batch() == seg.batch) return &o;
    }
    return nullptr;
  };
  // A batch the register has moved past: its region recorded a later batch, which replaced this
  // one's record if it had one. It may have been chosen, so it is not applied (again); its
  // outcome is unknown here. (Its proposer started the later batch only after giving up on
  // this one, whose callers it told so.)
  auto superseded = [&current](const Segment& seg) {
    for (const pb::BatchOutcome& o : current.outcomes()) {
      if (Supersedes(o, seg)) return true;
    }
    return false;
  };
  BatchResult out;
  out.replayed = true;
  for (const Segment& seg : segments) {
    out.replayed &= recorded(seg) != nullptr || superseded(seg);
  }
  crdt::PnCounter c = RegisterCounter(current);
  if (!out.replayed) c.Merge(weak);
  std::vector<pb::BatchOutcome> fresh;
  for (const Segment& seg : segments) {
    if (const pb::BatchOutcome* o = recorded(seg)) {
      // Chosen in an earlier ballot: answer from the record, apply nothing. The record answers
      // the segment only if it is the same batch, operation for operation; one of another
      // length says nothing about which value belongs to which operation.
      const bool same = static_cast<size_t>(o->values_size()) == seg.ops.size();
      for (size_t i = 0; i < seg.ops.size(); ++i) {
        const int n = static_cast<int>(i);
        OpResult r;
        r.unknown = !same;
        r.failed = same && n < o->failed_size() && o->failed(n);
        r.value = same ? o->values(n) : 0;
        r.updated_at_ms = o->updated_at_ms();
        out.results.push_back(r);
      }
      continue;
    }
    if (superseded(seg)) {
      for (size_t i = 0; i < seg.ops.size(); ++i) {
        OpResult r;
        r.unknown = true;
        out.results.push_back(r);
      }
      continue;
    }
    pb::BatchOutcome outcome;
    outcome.set_proposer(seg.proposer);
    outcome.set_batch(seg.batch);
    std::vector<size_t> mine;
    for (const StrongOp& op : seg.ops) {
      OpResult r;
      if (op.read) {
        r.value = c.Value();
      } else {
        StatusOr<int64_t> v = c.Add(service::kStrongOrigin, op.delta, now_ms);
        if (v.ok()) {
          r.value = *v;
        } else {
          r.failed = true;
        }
      }
      outcome.add_values(r.value);
      outcome.add_failed(r.failed);
      mine.push_back(out.results.size());
      out.results.push_back(r);
    }
    for (size_t i : mine) out.results[i].updated_at_ms = c.UpdatedAtMs();
    outcome.set_updated_at_ms(c.UpdatedAtMs());
    fresh.push_back(std::move(outcome));
  }
  out.updated_at_ms = c.UpdatedAtMs();
  if (out.replayed) {
    out.next = current;
    return out;
  }
  SetRegisterCounter(c, &out.next);
  // One outcome per region: a newer batch, or a new life, replaces the region's previous one.
  for (const pb::BatchOutcome& o : current.outcomes()) {
    bool replaced = false;
    for (const pb::BatchOutcome& f : fresh) {
      replaced |= RegionOf(o.proposer()) == RegionOf(f.proposer());
    }
    if (!replaced) *out.next.add_outcomes() = o;
  }
  for (pb::BatchOutcome& f : fresh) *out.next.add_outcomes() = std::move(f);
  return out;
}

}  // namespace edgestate::strong
