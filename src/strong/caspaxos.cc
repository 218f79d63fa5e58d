#include "strong/caspaxos.h"

#include <utility>

#include "service/counter_service.h"

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

}  // namespace

BatchResult ApplyBatch(const pb::Register& current, const crdt::PnCounter& weak,
                       std::string_view proposer, uint64_t batch, const std::vector<StrongOp>& ops,
                       int64_t now_ms) {
  BatchResult out;
  for (const pb::BatchOutcome& o : current.outcomes()) {
    if (o.proposer() == proposer && o.batch() == batch) {
      out.next = current;
      out.replayed = true;
      out.updated_at_ms = o.updated_at_ms();
      for (int i = 0; i < o.values_size(); ++i) {
        out.results.push_back(OpResult{i < o.failed_size() && o.failed(i), o.values(i)});
      }
      return out;
    }
  }
  crdt::PnCounter c = RegisterCounter(current);
  c.Merge(weak);
  pb::BatchOutcome outcome;
  outcome.set_proposer(std::string(proposer));
  outcome.set_batch(batch);
  for (const StrongOp& op : ops) {
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
    out.results.push_back(r);
  }
  out.updated_at_ms = c.UpdatedAtMs();
  outcome.set_updated_at_ms(out.updated_at_ms);
  SetRegisterCounter(c, &out.next);
  for (const pb::BatchOutcome& o : current.outcomes()) {
    if (RegionOf(o.proposer()) != RegionOf(proposer)) *out.next.add_outcomes() = o;
  }
  *out.next.add_outcomes() = std::move(outcome);
  return out;
}

}  // namespace edgestate::strong
