#include "strong/caspaxos.h"

#include <charconv>
#include <utility>

#include "service/keyspace.h"
#include "storage/store.h"

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

// One round's bookkeeping, shared by counters and keys: segments the register recorded are
// answered from their record (Machine::Replay), superseded ones are unknown, the others are
// applied (Machine::Apply) and recorded, one record per region. Machine also joins the
// proposer's replica in (Join, only when something is applied) and stores its state into the
// next register (Store).
template <typename Machine>
BatchResult RunRound(const pb::Register& current, const std::vector<Segment>& segments,
                     Machine& m) {
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
  if (!out.replayed) m.Join();
  std::vector<pb::BatchOutcome> fresh;
  for (const Segment& seg : segments) {
    if (const pb::BatchOutcome* o = recorded(seg)) {
      // Chosen in an earlier ballot: answer from the record, apply nothing.
      m.Replay(*o, seg, &out.results);
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
    m.Apply(seg, &outcome, &out.results);
    fresh.push_back(std::move(outcome));
  }
  out.updated_at_ms = m.UpdatedAtMs();
  if (out.replayed) {
    out.next = current;
    return out;
  }
  m.Store(&out.next);
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

// A counter's round: the register is its PN-counter with the strong slot.
struct CounterMachine {
  crdt::PnCounter c;
  const crdt::PnCounter& weak;
  int64_t now_ms;

  void Join() { c.Merge(weak); }
  void Replay(const pb::BatchOutcome& o, const Segment& seg, std::vector<OpResult>* results) {
    // The record answers the segment only if it is the same batch, operation for operation;
    // one of another length says nothing about which value belongs to which operation.
    const bool same = static_cast<size_t>(o.values_size()) == seg.ops.size();
    for (size_t i = 0; i < seg.ops.size(); ++i) {
      const int n = static_cast<int>(i);
      OpResult r;
      r.unknown = !same;
      r.failed = same && n < o.failed_size() && o.failed(n);
      r.value = same ? o.values(n) : 0;
      r.updated_at_ms = o.updated_at_ms();
      results->push_back(r);
    }
  }
  void Apply(const Segment& seg, pb::BatchOutcome* outcome, std::vector<OpResult>* results) {
    const size_t first = results->size();
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
      outcome->add_values(r.value);
      outcome->add_failed(r.failed);
      results->push_back(r);
    }
    for (size_t i = first; i < results->size(); ++i) (*results)[i].updated_at_ms = c.UpdatedAtMs();
    outcome->set_updated_at_ms(c.UpdatedAtMs());
  }
  int64_t UpdatedAtMs() const { return c.UpdatedAtMs(); }
  void Store(pb::Register* next) const { SetRegisterCounter(c, next); }
};

// A key's round: the register is the key's current write.
struct KeyMachine {
  std::optional<crdt::LwwRegister> cur;
  const std::optional<crdt::LwwRegister>& weak;
  int64_t now_ms;
  crdt::HlcClock clock;
  const std::string& origin;

  void Join() {
    if (!weak) return;
    if (!cur) {
      cur = weak;
    } else {
      crdt::Merge(&*cur, *weak);
    }
  }
  void Replay(const pb::BatchOutcome& o, const Segment& seg, std::vector<OpResult>* results) {
    const bool same = static_cast<size_t>(o.keys_size()) == seg.ops.size();
    for (size_t i = 0; i < seg.ops.size(); ++i) {
      OpResult r;
      r.unknown = !same;
      if (!same) {
        results->push_back(std::move(r));
        continue;
      }
      const pb::KeyOutcome& k = o.keys(static_cast<int>(i));
      const auto code = static_cast<StatusCode>(k.code());
      r.status = code == StatusCode::kOk ? Status::Ok() : Status(code, k.message());
      r.existed = k.existed();
      if (code == StatusCode::kOk) {
        crdt::LwwRegister w;
        w.hlc = crdt::Hlc{k.wall_ms(), k.logical()};
        w.origin = k.origin();
        w.expires_at_ms = k.expires_at_ms();
        w.deleted =
            !seg.ops[i].read && seg.ops[i].write.kind == service::RegisterWrite::Kind::kDelete;
        if (!seg.ops[i].read) {
          r.reg = std::move(w);
          r.size = k.size();
        } else if (cur && cur->hlc == w.hlc && cur->origin == w.origin) {
          r.reg = *cur;  // The value read is not recorded: answered while the register holds it.
        } else {
          r.unknown = true;
        }
      }
      results->push_back(std::move(r));
    }
  }
  void Apply(const Segment& seg, pb::BatchOutcome* outcome, std::vector<OpResult>* results) {
    for (const StrongOp& op : seg.ops) {
      OpResult r;
      pb::KeyOutcome* k = outcome->add_keys();
      const bool live = cur && crdt::IsLive(*cur, now_ms);
      if (op.read) {
        if (live) {
          r.reg = *cur;
        } else {
          r.status = Status::NotFound("no such key (or it expired or was deleted)");
        }
      } else {
        service::RegisterWrite w = op.write;
        const crdt::Hlc stamp = clock.Next(now_ms, cur ? cur->hlc : crdt::Hlc{});
        StatusOr<crdt::LwwRegister> made =
            service::MakeRegisterWrite(cur ? &*cur : nullptr, w, stamp, origin, now_ms);
        if (made.ok()) {
          r.existed = live;
          cur = std::move(made).value();
          r.reg = *cur;
          r.size = cur->value.size();
          r.reg->value.clear();
        } else {
          r.status = made.status();
        }
      }
      k->set_code(static_cast<uint32_t>(r.status.code()));
      k->set_message(r.status.message());
      k->set_existed(r.existed);
      k->set_size(r.size);
      if (r.reg) {
        k->set_origin(r.reg->origin);
        k->set_wall_ms(r.reg->hlc.wall_ms);
        k->set_logical(r.reg->hlc.logical);
        k->set_expires_at_ms(r.reg->expires_at_ms);
      }
      results->push_back(std::move(r));
    }
  }
  int64_t UpdatedAtMs() const { return cur ? cur->hlc.wall_ms : 0; }
  void Store(pb::Register* next) const {
    if (cur) next->set_key(storage::EncodeRegister(*cur));
  }
};

}  // namespace

std::string KeyInstance(std::string_view key) {
  std::string s(1, kKeyInstanceTag);
  s.append(key);
  return s;
}

std::optional<std::string_view> KeyOfInstance(std::string_view instance) {
  if (instance.empty() || instance[0] != kKeyInstanceTag) return std::nullopt;
  return instance.substr(1);
}

Status ValidateInstance(std::string_view instance) {
  if (std::optional<std::string_view> key = KeyOfInstance(instance)) {
    return service::ValidateKeyName(*key);
  }
  return service::ValidateCounterName(instance);
}

StatusOr<std::optional<crdt::LwwRegister>> RegisterKey(const pb::Register& r) {
  if (r.key().empty()) return std::optional<crdt::LwwRegister>();
  StatusOr<storage::StoredRegister> stored = storage::DecodeRegister(r.key());
  if (!stored.ok()) return stored.status();
  if (Status s = service::ValidateContentType(stored->reg.content_type); !s.ok()) return s;
  if (stored->reg.value.size() > service::kMaxValueBytes) {
    return Status::InvalidArgument("a strong register's value exceeds the value limit");
  }
  return std::optional<crdt::LwwRegister>(std::move(stored->reg));
}

BatchResult ApplyBatch(const pb::Register& current, const crdt::PnCounter& weak,
                       std::string_view proposer, uint64_t batch, const std::vector<StrongOp>& ops,
                       int64_t now_ms) {
  return ApplyRound(current, weak, {Segment{std::string(proposer), batch, ops}}, now_ms);
}

BatchResult ApplyRound(const pb::Register& current, const crdt::PnCounter& weak,
                       const std::vector<Segment>& segments, int64_t now_ms) {
  CounterMachine m{RegisterCounter(current), weak, now_ms};
  return RunRound(current, segments, m);
}

StatusOr<BatchResult> ApplyKeyRound(const pb::Register& current,
                                    const std::optional<crdt::LwwRegister>& weak,
                                    const std::vector<Segment>& segments, int64_t now_ms,
                                    crdt::Hlc clock, const std::string& origin) {
  StatusOr<std::optional<crdt::LwwRegister>> cur = RegisterKey(current);
  if (!cur.ok()) return cur.status();
  KeyMachine m{std::move(cur).value(), weak, now_ms, {}, origin};
  m.clock.Observe(clock);
  return RunRound(current, segments, m);
}

}  // namespace edgestate::strong
