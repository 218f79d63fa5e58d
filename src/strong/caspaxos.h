// CASPaxos (Rystsov, 2018) for counters and keys: the pure parts. An acceptor's transitions, and
// the change function a proposer applies to the register (docs/strong.md has the protocol and its
// safety argument). No I/O, no clocks read, no threads: StrongService drives these.
//
// Thread-safety: free functions over values; callers synchronize.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "crdt/lww_register.h"
#include "crdt/pn_counter.h"
#include "service/keyspace.h"
#include "strong/strong.pb.h"

namespace edgestate::strong {

// Ballots are ordered by (n, id). The zero ballot (absent) is below every real one.
bool BallotLess(const pb::Ballot& a, const pb::Ballot& b);
bool BallotEqual(const pb::Ballot& a, const pb::Ballot& b);

// Phase 1 at an acceptor: promises `b` when it is above every ballot promised so far (the reply
// then carries the accepted ballot and value); refuses otherwise, naming its promise.
// *changed says whether *rec moved (and must be stored before the reply is sent).
pb::Reply OnPrepare(pb::AcceptorRecord* rec, const pb::Ballot& b, bool* changed);
// Phase 2 at an acceptor: accepts `value` at `b` unless it promised a higher ballot; on accept
// it also promises `next` when that is higher (the proposer's next round skips phase 1).
pb::Reply OnAccept(pb::AcceptorRecord* rec, const pb::Ballot& b, const pb::Register& value,
                   const pb::Ballot& next, bool* changed);

// One CASPaxos instance per counter (named by the counter's name) and per key (kKeyInstanceTag
// + the key's name; counter names never hold a control character, so the two never meet).
inline constexpr char kKeyInstanceTag = '\x1f';
std::string KeyInstance(std::string_view key);
// The key a key instance names; std::nullopt for a counter's instance.
std::optional<std::string_view> KeyOfInstance(std::string_view instance);
// An instance named by a peer: a valid counter name, or the tag and a valid key name.
Status ValidateInstance(std::string_view instance);

// The register's counter state, and back.
crdt::PnCounter RegisterCounter(const pb::Register& r);
void SetRegisterCounter(const crdt::PnCounter& c, pb::Register* r);

// The register's write of a key: std::nullopt when never written; InvalidArgument when the
// bytes are malformed.
StatusOr<std::optional<crdt::LwwRegister>> RegisterKey(const pb::Register& r);

struct StrongOp {
  bool read = false;
  int64_t delta = 0;                  // Increments.
  service::RegisterWrite write = {};  // Writes of a key (read false).
};
struct OpResult {
  bool failed = false;  // The increment would overflow; nothing of it was applied.
  // Keys: the operation's outcome (OK, FailedPrecondition for a failed condition, NotFound for
  // a read or touch of a key that is not live), and the write read (with its value) or made
  // (without). `existed`: the write replaced a live one.
  Status status = Status::Ok();
  std::optional<crdt::LwwRegister> reg;
  bool existed = false;
  size_t size = 0;  // A write: its value's bytes.
  // The register's record of this operation's batch does not match the batch (another number
  // of operations): its outcome is unknown here, and must be reported as indeterminate.
  bool unknown = false;
  int64_t value = 0;  // The counter's value right after the operation.
  int64_t updated_at_ms = 0;
};
// Operations applied under one identity: a proposer's batch ("REGION/INCARNATION", number).
struct Segment {
  std::string proposer;
  uint64_t batch = 0;
  std::vector<StrongOp> ops;
};
struct BatchResult {
  pb::Register next;
  std::vector<OpResult> results;  // One per op, in order.
  int64_t updated_at_ms = 0;
  bool replayed = false;  // `current` already held this batch: `next` == `current`.
};

// The change function of one round. When `current` holds the outcome of (proposer, batch),
// the batch was chosen in an earlier ballot: returns `current` and that outcome. Otherwise joins
// `weak` (the proposer's replica of the counter: a lattice join, so weak writes are folded in
// and never lost) into `current`, applies `ops` in order (increments add to the kStrongOrigin
// slot; an increment that would overflow fails alone), and records the outcome, replacing this
// proposer's previous one and those of its region's earlier lives ("REGION/INCARNATION").
BatchResult ApplyBatch(const pb::Register& current, const crdt::PnCounter& weak,
                       std::string_view proposer, uint64_t batch, const std::vector<StrongOp>& ops,
                       int64_t now_ms);

// The change function of a round that carries several segments (a leader proposing its own
// batch and batches other voters handed it to finish, docs/strong.md): each segment is answered
// from its recorded outcome when the register holds it (unknown when that record has another
// number of operations); its results are unknown, and nothing of it is applied, when the
// register records a later batch of the same region (a later batch of the same life, or a
// later life); otherwise it is applied (in order) and recorded. `results` holds the segments'
// results one after another, in order; `replayed` is true when every segment was. REQUIRES: the
// segments' identities are distinct.
BatchResult ApplyRound(const pb::Register& current, const crdt::PnCounter& weak,
                       const std::vector<Segment>& segments, int64_t now_ms);

// The change function of a round on a key: as ApplyRound, with the register a key's write.
// `weak` (the proposer's replica of the key) is joined in by the LWW order; then reads return
// the live write (NotFound when none), and writes are checked and made as local writes are
// (service::MakeRegisterWrite) by `origin`, each stamped above `clock` and above the write it
// replaces. A read answered from a record answers only when the register still holds the write
// it read (its value is not recorded); otherwise its result is unknown. InvalidArgument when
// `current` holds a malformed write.
StatusOr<BatchResult> ApplyKeyRound(const pb::Register& current,
                                    const std::optional<crdt::LwwRegister>& weak,
                                    const std::vector<Segment>& segments, int64_t now_ms,
                                    crdt::Hlc clock, const std::string& origin);

}  // namespace edgestate::strong
