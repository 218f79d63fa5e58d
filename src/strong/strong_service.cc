#include "strong/strong_service.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <charconv>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "common/thread_name.h"
#include "strong/caspaxos.h"

namespace edgestate::strong {

namespace asio = boost::asio;
using SteadyClock = std::chrono::steady_clock;

Status ValidateVoters(const std::vector<std::string>& voters, const std::string& region,
                      const std::vector<std::string>& peer_regions) {
  if (voters.empty()) return Status::Ok();
  if (voters.size() != 3 && voters.size() != 5) {
    return Status::InvalidArgument(
        fmt::format("--strong-voters must name 3 or 5 regions (a majority must survive the loss "
                    "of one or two); got {}",
                    voters.size()));
  }
  std::set<std::string> seen;
  for (const std::string& v : voters) {
    if (!seen.insert(v).second) {
      return Status::InvalidArgument(fmt::format("--strong-voters names {} twice", v));
    }
    if (v != region &&
        std::find(peer_regions.begin(), peer_regions.end(), v) == peer_regions.end()) {
      return Status::InvalidArgument(fmt::format(
          "--strong-voters names {}, which is neither this node's region nor a peer", v));
    }
  }
  return Status::Ok();
}

namespace {

constexpr uint64_t kMaxVoters = 16;
constexpr std::chrono::milliseconds kMaxBackoff{100};
// A counter another voter proposed for (its accept reached this acceptor, or it beat this
// proposer) within this window is *shared*: this voter sends its operations on it to the
// leading voter instead of duelling for it.
constexpr std::chrono::seconds kSharedWindow{3};
// How long an accepted value may take to reach this voter's replica before it re-decides the
// counter (CheckWatch).
constexpr std::chrono::seconds kWatchDelay{2};
// Operations per round on one key (see MaxBatch).
constexpr size_t kMaxKeyBatch = 4;
// Bytes of keys' writes a proposer keeps for its next rounds (see TrimKeyStates).
constexpr size_t kPreparedKeyBudget = 64u << 20;
// What a failed write says when it may have been chosen.
constexpr std::string_view kMaybeApplied = "the write may or may not have been applied";

pb::Reply Failure(const Status& s) {
  pb::Reply r;
  r.set_code(static_cast<uint32_t>(s.code()));
  r.set_message(s.message());
  return r;
}

void EncodeKeyWrite(const service::RegisterWrite& w, pb::KeyWrite* out) {
  out->set_kind(static_cast<uint32_t>(w.kind));
  out->set_value(w.value);
  out->set_content_type(w.content_type);
  out->set_ttl_ms(w.ttl_ms);
  out->set_has_if_match(w.if_match.has_value());
  if (w.if_match) out->set_if_match(*w.if_match);
  out->set_if_none_match(w.if_none_match);
}

// A key write from a peer, checked as the API checks a client's.
StatusOr<service::RegisterWrite> DecodeKeyWrite(const pb::KeyWrite& in) {
  using Kind = service::RegisterWrite::Kind;
  service::RegisterWrite w;
  if (in.kind() > static_cast<uint32_t>(Kind::kTouch)) {
    return Status::InvalidArgument("unknown key write kind");
  }
  w.kind = static_cast<Kind>(in.kind());
  if (in.value().size() > service::kMaxValueBytes) {
    return Status::InvalidArgument("a key write exceeds the value limit");
  }
  if (Status s = service::ValidateContentType(in.content_type()); !s.ok()) return s;
  if (in.ttl_ms() != 0 && (in.ttl_ms() < crdt::kMinTtlMs || in.ttl_ms() > crdt::kMaxTtlMs)) {
    return Status::InvalidArgument("a key write has a bad TTL");
  }
  if (w.kind == Kind::kTouch && in.ttl_ms() == 0) {
    return Status::InvalidArgument("a touch needs a TTL");
  }
  if (in.if_match().size() > 1024) return Status::InvalidArgument("an If-Match is too long");
  w.value = in.value();
  w.content_type = in.content_type();
  w.ttl_ms = in.ttl_ms();
  if (in.has_if_match()) w.if_match = in.if_match();
  w.if_none_match = in.if_none_match();
  return w;
}

Status FromReply(const pb::Reply& r) {
  auto code = static_cast<StatusCode>(r.code());
  if (code == StatusCode::kOk || r.code() > static_cast<uint32_t>(StatusCode::kInternal)) {
    code = StatusCode::kUnavailable;
  }
  return Status(code, r.message().empty() ? "the voter refused" : r.message());
}

}  // namespace

struct StrongService::Impl : std::enable_shared_from_this<StrongService::Impl> {
  struct Pending {
    bool read = false;
    int64_t delta = 0;
    service::RegisterWrite write;  // A write of a key (read false).
    SteadyClock::time_point start;
    SteadyClock::time_point deadline;
    Callback done;
    // Set when the operation belongs to another voter's batch that this leader finishes (or,
    // at that voter, to the batch it hands over): applied under that identity (ApplyRound).
    std::string seg_proposer;
    uint64_t seg_batch = 0;
    // A re-decision of a value this voter accepted (CheckWatch): its phase 1 waits for this
    // voter's own acceptor among the majority, so that value is among those it sees.
    bool recover = false;
  };
  // One counter's proposer state. Strong thread only.
  struct KeyState {
    std::deque<Pending> queue;
    std::vector<Pending> batch;  // The round in flight; empty when none.
    uint64_t batch_seq = 0;
    uint64_t max_n = 0;  // Highest ballot number seen for this key.
    bool have_prepared = false;
    pb::Ballot prepared_ballot;  // Promised by a majority, which accepted prepared_value.
    pb::Register prepared_value;
    size_t prepared_bytes = 0;  // A key's: its write's bytes (counted in prepared_key_bytes).
    uint64_t attempt = 0;       // Replies of earlier attempts are ignored.
    int conflicts = 0;
    bool accept_sent = false;
    // Operations of a batch handed to the leader still unanswered; no batch starts here until
    // they are (the leader applies it under this voter's identity, see Conflict).
    size_t handed_over = 0;
    SteadyClock::time_point deadline;
    SteadyClock::time_point shared_until;  // See kSharedWindow.
    // Until then this voter's operations on the counter go to the leader: the leader's accepts
    // are its own operations' rounds and do not make the counter shared again.
    SteadyClock::time_point led_until;
    std::unique_ptr<asio::steady_timer> deadline_timer;
    std::unique_ptr<asio::steady_timer> backoff_timer;
    bool busy() const { return !batch.empty(); }
  };
  // An operation forwarded to a voter, until its answer or its deadline. Owned by its
  // timer's handler (so by `ioc`, never past it); everything else holds it weakly.
  struct ForwardCall {
    Pending op;
    std::string key;
    std::string voter;
    bool to_leader = false;
    std::set<std::string> tried;
    bool settled = false;
    asio::steady_timer timer;
    ForwardCall(Pending p, asio::io_context& ioc) : op(std::move(p)), timer(ioc) {}
  };
  struct Tally {
    size_t ok = 0;
    size_t failed = 0;
    bool settled = false;
    bool wait_for_self = false;  // Phase 1 of a round carrying a `recover` operation.
    pb::Ballot best;
    pb::Register value;
  };

  Impl(StrongOptions o, storage::Store* s, service::Keyspace* c, Transport* t)
      : options(std::move(o)), store(s), counters(c), transport(t), rng(std::random_device{}()) {}

  // Any thread: starts `op` on instance `instance` on the strong thread (Unavailable once
  // stopped).
  void Submit(std::string instance, Pending op);

  // --- Strong thread ---
  void Start(std::string name, Pending op);
  // Queues `op` for a round here. With `may_lead_elsewhere`, queued operations on a shared
  // counter go to the leading voter instead (when it is reachable).
  void Enqueue(const std::string& name, Pending op, bool may_lead_elsewhere = true);
  void MaybeStart(const std::string& name, bool may_lead_elsewhere = true);
  void Attempt(const std::string& name);
  void AcceptPhase(const std::string& name, uint64_t attempt, pb::Ballot b, pb::Register current);
  void Chosen(const std::string& name, const pb::Ballot& b, BatchResult result);
  void Conflict(const std::string& name);
  void FinishBatch(const std::string& name, const Status& s);
  // Ends the round in flight: its replies and timers are ignored from now on; returns its
  // operations.
  std::vector<Pending> TakeBatch(KeyState& ks);
  // Sends `op` to a voter: the nearest reachable one not in `tried` (a non-voter), or the
  // leading voter (`to_leader`, a voter whose counter is shared; when the leader cannot be
  // reached the voter proposes it itself).
  void Forward(std::string name, Pending op, std::set<std::string> tried, bool to_leader = false);
  void FlushForwards();
  void SendToVoter(size_t i, const pb::Request& req,
                   std::function<void(std::optional<pb::Reply>)> done);
  void Handle(const std::string& from, const pb::Request& req,
              std::function<void(pb::Reply)> reply);
  void Persist(const std::string& key, const pb::AcceptorRecord& rec, pb::Reply reply,
               std::function<void(pb::Reply)> done);
  void Reply(Pending& op, StatusOr<StrongResult> r);
  // Remembers that this acceptor accepted `value` for `key` from another proposer; CheckWatch
  // later makes sure the replica here got at least its strong slot.
  void Watch(const std::string& key, const pb::Register& value, SteadyClock::time_point since);
  void CheckWatch();
  struct Watched;
  // Whether this replica still lacks the value `w` watches for. Errors of the replica's reads.
  StatusOr<bool> Lacks(const std::string& instance, const Watched& w) const;
  void NoteBallot(KeyState& ks, const pb::Ballot& b) { ks.max_n = std::max(ks.max_n, b.n()); }
  // Forgets the register a majority promised for the next round (that round runs phase 1).
  void DropPrepared(KeyState& ks) {
    ks.have_prepared = false;
    prepared_key_bytes -= ks.prepared_bytes;
    ks.prepared_bytes = 0;
    ks.prepared_value.Clear();
  }
  // Keys' values stay in RocksDB, not in memory: past kPreparedKeyBudget of prepared writes,
  // idle keys' proposer states are dropped (their next round runs phase 1).
  void TrimKeyStates();
  // The acceptor record of `instance`: a counter's is kept in memory; a key's is read from the
  // store and kept only while a change to it is being stored (ReleaseAcceptor). Unavailable or
  // InvalidArgument when the stored record cannot be read.
  StatusOr<pb::AcceptorRecord*> Acceptor(const std::string& instance);
  void ReleaseAcceptor(const std::string& instance);
  // Operations per round on one instance: a key's carry values of up to 1 MiB, and a forward's
  // reply carries what its reads read, so both stay well under a frame (kMaxFrameBytes).
  size_t MaxBatch(std::string_view instance) const {
    return KeyOfInstance(instance) ? std::min<size_t>(options.max_batch, kMaxKeyBatch)
                                   : options.max_batch;
  }
  // Unique per proposer life: (15 - voter index) in the top bits, so at equal n the leader's
  // ballot is the highest and it wins the first race for a new counter; the incarnation below.
  uint64_t BallotId() const {
    return ((kMaxVoters - 1 - static_cast<uint64_t>(my_index)) << 48) |
           (incarnation & ((uint64_t{1} << 48) - 1));
  }
  // The callback of a chosen value's local write: logs a failure (which changes no answer: the
  // value is chosen, and the next round or another voter's carries it), then runs `finish` on
  // the strong thread.
  template <typename T>
  auto AfterStored(std::function<void()> finish) {
    return [w = weak_from_this(), finish = std::move(finish)](StatusOr<T> stored) mutable {
      if (!stored.ok()) {
        spdlog::warn("storing a chosen strong value failed: {}", stored.status().message());
      }
      if (auto self = w.lock()) {
        self->Post([finish = std::move(finish)](Impl&) mutable { finish(); });
      }
    };
  }
  // Runs fn(self) on the strong thread if the service still exists.
  template <typename Fn>
  void Post(Fn fn) {
    asio::post(ioc, [w = weak_from_this(), fn = std::move(fn)]() mutable {
      if (auto self = w.lock(); self && !self->stopping) fn(*self);
    });
  }

  const StrongOptions options;
  storage::Store* const store;
  service::Keyspace* const counters;
  Transport* const transport;
  asio::io_context ioc{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::thread thread;
  int my_index = -1;  // Index in options.voters; -1: not a voter.
  uint64_t incarnation = 0;
  std::string proposer;  // "REGION/INCARNATION".
  size_t majority = 0;
  std::mt19937_64 rng;
  std::mutex mu;
  bool stopped = false;   // GUARDED_BY(mu): no more posts.
  bool stopping = false;  // Strong thread: handlers do nothing.
  std::unordered_map<std::string, pb::AcceptorRecord> acceptors;  // Strong thread only.
  // Keys' acceptor records: changes being stored, per instance. Strong thread only.
  std::unordered_map<std::string, int> acceptor_writes;
  size_t prepared_key_bytes = 0;                     // Strong thread only.
  std::unordered_map<std::string, KeyState> keys;    // Strong thread only.
  std::vector<std::weak_ptr<ForwardCall>> forwards;  // Strong thread only.
  // Forwards not sent yet, by (voter, counter); sent together by FlushForwards.
  // Key: (voter, counter, segment proposer, segment batch); a handed-over batch travels alone.
  std::map<std::tuple<std::string, std::string, std::string, uint64_t>,
           std::vector<std::shared_ptr<ForwardCall>>>
      outbox;                 // Strong thread only.
  bool flush_posted = false;  // Strong thread only.
  // Instances whose accepted value this replica must reach, since when: a counter's strong slot
  // (inc, dec), a key's write (its clock).
  struct Watched {
    uint64_t inc = 0, dec = 0;
    crdt::Hlc hlc;
    SteadyClock::time_point since;
  };
  std::unordered_map<std::string, Watched> watched;  // Strong thread only.
  std::unique_ptr<asio::steady_timer> watch_timer;   // Strong thread only.
  Counter* redecided = nullptr;

  Counter* ops_ok = nullptr;
  Counter* ops_unavailable = nullptr;
  Counter* ops_rejected = nullptr;
  Counter* rounds_full = nullptr;
  Counter* rounds_fast = nullptr;
  Counter* conflicts = nullptr;
  Counter* replays = nullptr;
  Counter* forwards_ok = nullptr;
  Counter* forwards_failed = nullptr;
  Counter* led = nullptr;
  Counter* handovers = nullptr;
  Histogram* batch_size = nullptr;
  Histogram* forward_batch = nullptr;
  Histogram* latency = nullptr;
};

void StrongService::Impl::Reply(Pending& op, StatusOr<StrongResult> r) {
  if (r.ok()) {
    ops_ok->Inc();
  } else if (r.status().code() == StatusCode::kUnavailable) {
    ops_unavailable->Inc();
  } else {
    ops_rejected->Inc();
  }
  latency->Observe(std::chrono::duration<double>(SteadyClock::now() - op.start).count());
  Callback done = std::move(op.done);
  done(std::move(r));
}

void StrongService::Impl::Watch(const std::string& key, const pb::Register& value,
                                SteadyClock::time_point since) {
  if (watched.count(key)) return;  // The first one still to check covers the later ones.
  if (KeyOfInstance(key)) {
    StatusOr<std::optional<crdt::LwwRegister>> reg = RegisterKey(value);
    if (reg.ok() && *reg) watched.emplace(key, Watched{0, 0, (*reg)->hlc, since});
    return;
  }
  for (const pb::Slot& s : value.slots()) {
    if (s.origin() == service::kStrongOrigin)
      watched.emplace(key, Watched{s.inc(), s.dec(), {}, since});
  }
}

StatusOr<bool> StrongService::Impl::Lacks(const std::string& instance, const Watched& w) const {
  if (std::optional<std::string_view> key = KeyOfInstance(instance)) {
    StatusOr<std::optional<crdt::LwwRegister>> replica =
        counters->GetRegister(storage::RecordType::kKey, *key);
    if (!replica.ok()) return replica.status();
    return !*replica || (*replica)->hlc < w.hlc;
  }
  const StatusOr<crdt::PnCounter> replica = counters->State(instance);
  if (!replica.ok()) return replica.status();
  crdt::Slot local;
  if (const crdt::Slot* l = replica->Find(service::kStrongOrigin)) local = *l;
  return local.inc < w.inc || local.dec < w.dec;
}

void StrongService::Impl::CheckWatch() {
  // A value accepted here more than kWatchDelay ago should have reached this replica: its
  // proposer stores it as a local write once chosen, and replication ships it. When it has not
  // (the proposer died between choosing and storing, or it was never chosen), a strong read
  // decides the counter again and stores what is chosen here.
  const auto now = SteadyClock::now();
  size_t behind = 0;
  for (auto it = watched.begin(); it != watched.end();) {
    if (now - it->second.since < kWatchDelay) {
      ++it;
      continue;
    }
    StatusOr<bool> lacking = Lacks(it->first, it->second);
    if (!lacking.ok()) {  // Unreadable here now: looked at again on the next round.
      spdlog::warn("strong: reading {:?} failed: {}", it->first, lacking.status().message());
      ++it;
      continue;
    }
    if (*lacking) {
      redecided->Inc();
      ++behind;
      Pending op;
      op.read = true;
      op.recover = true;
      op.start = now;
      op.deadline = now + options.timeout;
      op.done = [key = it->first](StatusOr<StrongResult> r) {
        if (!r.ok()) spdlog::warn("strong: re-deciding {:?} failed: {}", key, r.status().message());
      };
      Enqueue(it->first, std::move(op), /*may_lead_elsewhere=*/false);
    }
    it = watched.erase(it);
  }
  if (behind > 0) {
    spdlog::info(
        "strong: re-deciding {} counter(s) or key(s) whose accepted value is not applied here",
        behind);
  }
  watch_timer->expires_after(kWatchDelay);
  watch_timer->async_wait([w = weak_from_this()](boost::system::error_code ec) {
    auto self = w.lock();
    if (ec || !self || self->stopping) return;
    self->CheckWatch();
  });
}

void StrongService::Impl::Start(std::string name, Pending op) {
  if (options.voters.empty()) {
    return Reply(op, Status::Unavailable(
                         "strong consistency needs a voter set: start every node with the same "
                         "--strong-voters REGION,REGION,REGION"));
  }
  if (options.fault_local_reads && op.read) {
    // Deliberately wrong (test builds only): a local read is not linearizable.
    if (std::optional<std::string_view> key = KeyOfInstance(name)) {
      StatusOr<std::optional<crdt::LwwRegister>> reg =
          counters->GetRegister(storage::RecordType::kKey, *key);
      if (!reg.ok()) return Reply(op, reg.status());
      if (!*reg || !crdt::IsLive(**reg, RealClock()->NowUnixMillis())) {
        return Reply(op, Status::NotFound("no such key"));
      }
      return Reply(op, StrongResult{0, (*reg)->hlc.wall_ms, options.region, std::move(**reg)});
    }
    StatusOr<service::CounterValue> v = counters->Read(name);
    if (!v.ok()) return Reply(op, v.status());
    return Reply(op, StrongResult{v->value, v->updated_at_ms, options.region});
  }
  if (my_index >= 0) return Enqueue(name, std::move(op));
  Forward(std::move(name), std::move(op), {});
}

void StrongService::Impl::Enqueue(const std::string& name, Pending op, bool may_lead_elsewhere) {
  keys[name].queue.push_back(std::move(op));
  MaybeStart(name, may_lead_elsewhere);
}

void StrongService::Impl::MaybeStart(const std::string& name, bool may_lead_elsewhere) {
  KeyState& ks = keys[name];
  if (ks.busy() || ks.queue.empty()) return;
  const auto now = SteadyClock::now();
  if (may_lead_elsewhere && my_index > 0 && now < ks.shared_until &&
      transport->LinkRttUs(options.voters[0])) {
    ks.led_until = now + kSharedWindow;
    std::deque<Pending> queued = std::move(ks.queue);
    ks.queue.clear();
    for (Pending& op : queued) Forward(name, std::move(op), {}, /*to_leader=*/true);
    return;
  }
  if (ks.handed_over > 0) return;
  ks.batch.clear();
  // Up to max_batch operations, never splitting another voter's batch across two rounds.
  auto same_segment = [&ks] {
    return !ks.batch.empty() && !ks.batch.back().seg_proposer.empty() &&
           ks.queue.front().seg_proposer == ks.batch.back().seg_proposer &&
           ks.queue.front().seg_batch == ks.batch.back().seg_batch;
  };
  const size_t max_batch = MaxBatch(name);
  while (!ks.queue.empty() && (ks.batch.size() < max_batch || same_segment())) {
    Pending op = std::move(ks.queue.front());
    ks.queue.pop_front();
    // Another voter's batch is applied whole or not at all (its record answers it by position),
    // whatever its operations' deadlines; their callers were answered by the forwarder's timer.
    if (now >= op.deadline && op.seg_proposer.empty()) {
      Reply(op, Status::Unavailable("timed out waiting for a round of consensus"));
      continue;
    }
    ks.batch.push_back(std::move(op));
  }
  if (ks.batch.empty()) return;
  ++ks.batch_seq;
  ks.accept_sent = false;
  ks.conflicts = 0;
  // The round has until its earliest own operation's deadline. Another voter's batch carries
  // its own late deadlines (it is applied whole, see above): it gets a full timeout.
  ks.deadline = SteadyClock::time_point::max();
  for (const Pending& op : ks.batch) {
    ks.deadline =
        std::min(ks.deadline, op.seg_proposer.empty() ? op.deadline : now + options.timeout);
  }
  batch_size->Observe(static_cast<double>(ks.batch.size()));
  if (!ks.deadline_timer) ks.deadline_timer = std::make_unique<asio::steady_timer>(ioc);
  ks.deadline_timer->expires_at(ks.deadline);
  ks.deadline_timer->async_wait(
      [w = weak_from_this(), name, seq = ks.batch_seq](boost::system::error_code ec) {
        auto self = w.lock();
        if (ec || !self || self->stopping) return;
        KeyState& k = self->keys[name];
        if (!k.busy() || k.batch_seq != seq) return;
        self->FinishBatch(
            name, Status::Unavailable(fmt::format(
                      "no majority of the voters ({}) answered within {} ms",
                      fmt::join(self->options.voters, ","), self->options.timeout.count())));
      });
  Attempt(name);
}

void StrongService::Impl::SendToVoter(size_t i, const pb::Request& req,
                                      std::function<void(std::optional<pb::Reply>)> done) {
  if (static_cast<int>(i) == my_index) {
    Handle(options.region, req, [this, done = std::move(done)](pb::Reply r) mutable {
      Post([r = std::move(r), done = std::move(done)](Impl&) mutable { done(std::move(r)); });
    });
    return;
  }
  transport->Call(
      options.voters[i], req.SerializeAsString(),
      [w = weak_from_this(), done = std::move(done)](StatusOr<std::string> r, bool) mutable {
        auto self = w.lock();
        if (!self) return;
        std::optional<pb::Reply> reply;
        if (r.ok()) {
          pb::Reply parsed;
          if (parsed.ParseFromString(*r)) reply = std::move(parsed);
        }
        self->Post([reply = std::move(reply), done = std::move(done)](Impl&) mutable {
          done(std::move(reply));
        });
      });
}

void StrongService::Impl::Attempt(const std::string& name) {
  KeyState& ks = keys[name];
  if (SteadyClock::now() >= ks.deadline) {
    return FinishBatch(name, Status::Unavailable(fmt::format(
                                 "no majority of the voters ({}) answered within {} ms",
                                 fmt::join(options.voters, ","), options.timeout.count())));
  }
  const uint64_t attempt = ++ks.attempt;
  if (ks.have_prepared) {
    rounds_fast->Inc();
    return AcceptPhase(name, attempt, ks.prepared_ballot, ks.prepared_value);
  }
  rounds_full->Inc();
  pb::Ballot b;
  b.set_n(ks.max_n + 1);
  b.set_id(BallotId());
  ks.max_n = b.n();
  pb::Request req;
  req.mutable_prepare()->set_key(name);
  *req.mutable_prepare()->mutable_ballot() = b;
  auto tally = std::make_shared<Tally>();
  tally->wait_for_self = my_index >= 0 && std::any_of(ks.batch.begin(), ks.batch.end(),
                                                      [](const Pending& p) { return p.recover; });
  for (size_t i = 0; i < options.voters.size(); ++i) {
    SendToVoter(i, req, [this, name, attempt, b, tally, i](std::optional<pb::Reply> r) {
      KeyState& k = keys[name];
      if (tally->settled || !k.busy() || k.attempt != attempt) return;
      // Any majority is safe; waiting for this one's own answer only makes it larger.
      if (static_cast<int>(i) == my_index) tally->wait_for_self = false;
      if (r && r->ok()) {
        ++tally->ok;
        if (r->has_accepted() && BallotLess(tally->best, r->accepted())) {
          tally->best = r->accepted();
          tally->value = r->value();
        }
      } else {
        ++tally->failed;
        if (r) NoteBallot(k, r->promised());
      }
      if (tally->ok >= majority && !tally->wait_for_self) {
        tally->settled = true;
        AcceptPhase(name, attempt, b, std::move(tally->value));
      } else if (tally->failed > options.voters.size() - majority) {
        tally->settled = true;
        Conflict(name);
      }
    });
  }
}

void StrongService::Impl::AcceptPhase(const std::string& name, uint64_t attempt, pb::Ballot b,
                                      pb::Register current) {
  KeyState& ks = keys[name];
  // This proposer's own operations form one segment; each batch another voter handed over, one
  // more (under that voter's identity).
  std::vector<Segment> segments;
  std::vector<std::pair<size_t, size_t>> where;  // Per op: (segment, position).
  for (const Pending& p : ks.batch) {
    std::string id = p.seg_proposer.empty() ? proposer : p.seg_proposer;
    uint64_t num = p.seg_proposer.empty() ? ks.batch_seq : p.seg_batch;
    size_t s = 0;
    while (s < segments.size() && !(segments[s].proposer == id && segments[s].batch == num)) ++s;
    if (s == segments.size()) segments.push_back(Segment{std::move(id), num, {}});
    where.emplace_back(s, segments[s].ops.size());
    segments[s].ops.push_back(StrongOp{p.read, p.delta, p.write});
  }
  // Nothing was sent for this ballot yet: when the replica cannot be read, or the register is
  // malformed, the whole batch fails cleanly.
  StatusOr<BatchResult> computed = Status::Internal("no round");
  const int64_t now_ms = RealClock()->NowUnixMillis();
  if (std::optional<std::string_view> key = KeyOfInstance(name)) {
    StatusOr<std::optional<crdt::LwwRegister>> replica =
        counters->GetRegister(storage::RecordType::kKey, *key);
    if (!replica.ok()) {
      return FinishBatch(
          name, Status::Unavailable("reading the key failed: " + replica.status().message()));
    }
    computed =
        ApplyKeyRound(current, *replica, segments, now_ms, counters->ClockNow(), options.region);
  } else {
    StatusOr<crdt::PnCounter> replica = counters->State(name);
    if (!replica.ok()) {
      return FinishBatch(
          name, Status::Unavailable("reading the counter failed: " + replica.status().message()));
    }
    computed = ApplyRound(current, *replica, segments, now_ms);
  }
  if (!computed.ok()) {
    return FinishBatch(name, Status::Unavailable("the register agreed on is malformed: " +
                                                 computed.status().message()));
  }
  BatchResult round = std::move(computed).value();
  // Back to the batch's order.
  std::vector<size_t> first(segments.size(), 0);
  for (size_t s = 1; s < segments.size(); ++s) first[s] = first[s - 1] + segments[s - 1].ops.size();
  auto result = std::make_shared<BatchResult>();
  result->next = std::move(round.next);
  result->replayed = round.replayed;
  result->updated_at_ms = round.updated_at_ms;
  for (const auto& [s, pos] : where) result->results.push_back(round.results[first[s] + pos]);
  if (result->replayed) replays->Inc();
  ks.accept_sent = true;
  pb::Ballot next;
  next.set_n(b.n() + 1);
  next.set_id(BallotId());
  ks.max_n = std::max(ks.max_n, next.n());
  pb::Request req;
  pb::Accept* a = req.mutable_accept();
  a->set_key(name);
  *a->mutable_ballot() = b;
  *a->mutable_value() = result->next;
  *a->mutable_next() = next;
  auto tally = std::make_shared<Tally>();
  for (size_t i = 0; i < options.voters.size(); ++i) {
    SendToVoter(i, req, [this, name, attempt, next, tally, result](std::optional<pb::Reply> r) {
      KeyState& k = keys[name];
      if (tally->settled || !k.busy() || k.attempt != attempt) return;
      if (r && r->ok()) {
        ++tally->ok;
      } else {
        ++tally->failed;
        if (r) NoteBallot(k, r->promised());
      }
      if (tally->ok >= majority) {
        tally->settled = true;
        Chosen(name, next, std::move(*result));
      } else if (tally->failed > options.voters.size() - majority) {
        tally->settled = true;
        DropPrepared(k);
        Conflict(name);
      }
    });
  }
}

void StrongService::Impl::Chosen(const std::string& name, const pb::Ballot& next,
                                 BatchResult result) {
  KeyState& ks = keys[name];
  // The majority that accepted also promised `next`, and holds result.next: the next round
  // may skip phase 1.
  ks.have_prepared = true;
  ks.prepared_ballot = next;
  ks.prepared_value = result.next;
  if (KeyOfInstance(name)) {
    prepared_key_bytes -= ks.prepared_bytes;
    ks.prepared_bytes = ks.prepared_value.key().size();
    prepared_key_bytes += ks.prepared_bytes;
    if (prepared_key_bytes > kPreparedKeyBudget) TrimKeyStates();
  }
  auto batch = std::make_shared<std::vector<Pending>>(TakeBatch(ks));
  auto finish = [this, name, batch, result = std::move(result)]() {
    for (size_t i = 0; i < batch->size(); ++i) {
      Pending& op = (*batch)[i];
      OpResult missing;
      missing.unknown = true;
      const OpResult& r = i < result.results.size() ? result.results[i] : missing;
      if (r.unknown && op.read && !stopping && SteadyClock::now() < op.deadline) {
        // A read whose earlier round was chosen but whose answer the register no longer holds
        // (a key's reads record no value): it changes nothing, so it runs again in a later
        // round, here, whose answer is as linearizable (the read is still in progress).
        op.seg_proposer.clear();
        op.seg_batch = 0;
        Enqueue(name, std::move(op), /*may_lead_elsewhere=*/false);
        continue;
      }
      if (r.unknown) {
        Reply(op, Status::Unavailable(op.read ? std::string("the outcome of this read is unknown")
                                              : std::string(kMaybeApplied)));
      } else if (r.failed) {
        Reply(op, Status::FailedPrecondition("increment would overflow the counter's int64 range"));
      } else if (!r.status.ok()) {
        Reply(op, r.status);
      } else {
        Reply(op, StrongResult{r.value, r.updated_at_ms, options.region, r.reg, r.existed, r.size});
      }
    }
  };
  // The chosen value becomes a local write, so it replicates everywhere; answer once it is
  // stored. (A failed store changes no answer: the value is chosen, and the next round or
  // anti-entropy from another voter's round carries it.)
  if (std::optional<std::string_view> key = KeyOfInstance(name)) {
    StatusOr<std::optional<crdt::LwwRegister>> chosen = RegisterKey(ks.prepared_value);
    MaybeStart(name);
    if (!chosen.ok() || !*chosen) return finish();  // Reads of a key never written.
    counters->ApplyChosenRegister(std::string(*key), std::move(**chosen),
                                  AfterStored<service::RegisterResult>(std::move(finish)));
    return;
  }
  std::optional<crdt::Slot> strong;
  for (const pb::Slot& s : ks.prepared_value.slots()) {
    if (s.origin() == service::kStrongOrigin) {
      strong = crdt::Slot{s.inc(), s.dec(), s.version(), s.updated_at_ms()};
    }
  }
  MaybeStart(name);
  if (!strong) return finish();
  counters->ApplyStrong(name, *strong, AfterStored<service::CounterValue>(std::move(finish)));
}

void StrongService::Impl::Conflict(const std::string& name) {
  KeyState& ks = keys[name];
  conflicts->Inc();
  ++ks.conflicts;
  // A first refusal before the accept was sent is retried here with a higher ballot: it is
  // often only the promise a leader left behind when it last proposed for the counter (for this
  // voter's own operations, sent there while the counter was shared), and the leader may be
  // idle on it now. A second refusal, or one after the accept, means a live duel.
  const bool duel = ks.accept_sent || ks.conflicts >= 2;
  if (duel) ks.shared_until = SteadyClock::now() + kSharedWindow;
  if (duel && my_index > 0 && transport->LinkRttUs(options.voters[0])) {
    // The operations move to the leading voter instead of this voter duelling it for the
    // counter. A batch that lost before its accept was sent cannot have been chosen: they go as
    // ordinary operations. One that lost after may have been chosen: the leader finishes it
    // under this proposer's identity (answering from the register if it was chosen, applying it
    // once if not), and until every operation of it is answered this voter starts no batch of
    // its own on the counter, so the register's record of this identity cannot be replaced.
    const bool maybe_chosen = ks.accept_sent;
    std::vector<Pending> batch = TakeBatch(ks);
    if (maybe_chosen) {
      ks.handed_over = batch.size();
      handovers->Inc();
    }
    for (Pending& op : batch) {
      if (maybe_chosen) {
        op.seg_proposer = proposer;
        op.seg_batch = ks.batch_seq;
        op.done = [this, name, done = std::move(op.done)](StatusOr<StrongResult> r) {
          done(std::move(r));
          KeyState& k = keys[name];
          if (--k.handed_over == 0 && !stopping) MaybeStart(name);
        };
      }
      Forward(name, std::move(op), {}, /*to_leader=*/true);
    }
    return MaybeStart(name);  // Sends what queued meanwhile the same way.
  }
  // Randomized exponential back-off, so duelling proposers stop pre-empting each other.
  const int64_t cap_us =
      std::min<int64_t>(kMaxBackoff.count() * 1000, int64_t{1000} << std::min(ks.conflicts, 16));
  std::uniform_int_distribution<int64_t> pick(cap_us / 4, cap_us);
  if (!ks.backoff_timer) ks.backoff_timer = std::make_unique<asio::steady_timer>(ioc);
  ks.backoff_timer->expires_after(std::chrono::microseconds(pick(rng)));
  ks.backoff_timer->async_wait(
      [w = weak_from_this(), name, attempt = ks.attempt](boost::system::error_code ec) {
        auto self = w.lock();
        if (ec || !self || self->stopping) return;
        KeyState& k = self->keys[name];
        if (!k.busy() || k.attempt != attempt) return;
        self->Attempt(name);
      });
}

std::vector<StrongService::Impl::Pending> StrongService::Impl::TakeBatch(KeyState& ks) {
  ++ks.attempt;
  if (ks.deadline_timer) ks.deadline_timer->cancel();
  if (ks.backoff_timer) ks.backoff_timer->cancel();
  std::vector<Pending> batch = std::move(ks.batch);
  ks.batch.clear();
  return batch;
}

void StrongService::Impl::FinishBatch(const std::string& name, const Status& s) {
  KeyState& ks = keys[name];
  DropPrepared(ks);
  std::vector<Pending> batch = TakeBatch(ks);
  const bool indeterminate = ks.accept_sent;
  for (Pending& op : batch) {
    // Another voter's batch may have been chosen by its own accept before it was handed over.
    if ((indeterminate || !op.seg_proposer.empty()) && !op.read) {
      Reply(op, Status(s.code(), s.message() + fmt::format(" ({})", kMaybeApplied)));
    } else {
      Reply(op, s);
    }
  }
  if (!stopping) MaybeStart(name);
}

void StrongService::Impl::Forward(std::string name, Pending op, std::set<std::string> tried,
                                  bool to_leader) {
  // The nearest voter whose link is up and that was not tried yet.
  std::optional<std::string> target;
  int64_t best = 0;
  if (to_leader) {
    if (!tried.count(options.voters[0]) && transport->LinkRttUs(options.voters[0])) {
      target = options.voters[0];
      led->Inc();
    } else if (!op.seg_proposer.empty()) {
      forwards_failed->Inc();
      return Reply(
          op, Status::Unavailable("lost the link to the leading voter " + options.voters[0] +
                                  (op.read ? std::string() : "; " + std::string(kMaybeApplied))));
    } else {
      return Enqueue(name, std::move(op), /*may_lead_elsewhere=*/false);
    }
  }
  for (const std::string& v : options.voters) {
    if (to_leader || tried.count(v)) continue;
    std::optional<int64_t> rtt = transport->LinkRttUs(v);
    if (!rtt) continue;
    if (!target || *rtt < best) {
      target = v;
      best = *rtt;
    }
  }
  if (!target) {
    forwards_failed->Inc();
    return Reply(op,
                 Status::Unavailable(fmt::format("no voter ({}) is reachable from {}",
                                                 fmt::join(options.voters, ","), options.region)));
  }
  // A handed-over batch travels whole (see MaybeStart); its late operations are answered by
  // the call's timer below, as indeterminate.
  if (SteadyClock::now() >= op.deadline && op.seg_proposer.empty()) {
    forwards_failed->Inc();
    return Reply(op, Status::Unavailable("timed out forwarding to a voter"));
  }
  auto call = std::make_shared<ForwardCall>(std::move(op), ioc);
  call->key = std::move(name);
  call->voter = *target;
  call->to_leader = to_leader;
  call->tried = std::move(tried);
  call->tried.insert(*target);
  if (forwards.size() >= 1024) {
    std::erase_if(forwards, [](const std::weak_ptr<ForwardCall>& f) { return f.expired(); });
  }
  forwards.push_back(call);
  // The voter answers within the remaining time; this bounds the wait if it never does.
  call->timer.expires_at(call->op.deadline + std::chrono::milliseconds(50));
  call->timer.async_wait([w = weak_from_this(), call](boost::system::error_code ec) {
    auto self = w.lock();
    if (ec || !self || call->settled) return;
    call->settled = true;
    self->forwards_failed->Inc();
    self->Reply(call->op, Status::Unavailable(
                              fmt::format("voter {} did not answer in time{}", call->voter,
                                          call->op.read ? "" : "; " + std::string(kMaybeApplied))));
  });
  // Operations on one counter for one voter that arrive before the flush runs (everything
  // already queued on this thread) travel in one message.
  outbox[{call->voter, call->key, call->op.seg_proposer, call->op.seg_batch}].push_back(
      std::move(call));
  if (!flush_posted) {
    flush_posted = true;
    Post([](Impl& s) { s.FlushForwards(); });
  }
}

void StrongService::Impl::FlushForwards() {
  flush_posted = false;
  auto groups = std::move(outbox);
  outbox.clear();
  const auto now = SteadyClock::now();
  for (auto& [where, group] : groups) {
    const auto& [voter, key, seg_proposer, seg_batch] = where;
    // A handed-over batch travels whole (it is at most one round's worth); other operations go
    // at most one round's worth per message.
    const size_t chunk = seg_proposer.empty() ? MaxBatch(key) : group.size();
    for (size_t from = 0; from < group.size(); from += chunk) {
      std::vector<std::shared_ptr<ForwardCall>> calls(
          group.begin() + static_cast<std::ptrdiff_t>(from),
          group.begin() + static_cast<std::ptrdiff_t>(std::min(group.size(), from + chunk)));
      pb::Request req;
      pb::Forward* f = req.mutable_forward();
      f->set_key(key);
      if (!seg_proposer.empty()) {
        f->set_proposer(seg_proposer);
        f->set_batch(seg_batch);
      }
      auto remaining = std::chrono::milliseconds::max();
      for (const auto& call : calls) {
        pb::ForwardOp* op = f->add_ops();
        op->set_read(call->op.read);
        op->set_delta(call->op.delta);
        if (KeyOfInstance(key) && !call->op.read)
          EncodeKeyWrite(call->op.write, op->mutable_write());
        remaining = std::min(remaining, std::chrono::duration_cast<std::chrono::milliseconds>(
                                            call->op.deadline - now));
      }
      f->set_timeout_ms(static_cast<uint32_t>(std::max<int64_t>(1, remaining.count())));
      forward_batch->Observe(static_cast<double>(calls.size()));
      // The transport may keep this callback past the service's io_context, so it holds the
      // calls weakly: each call's own timer handler owns it until it is settled.
      std::vector<std::weak_ptr<ForwardCall>> weak_calls(calls.begin(), calls.end());
      calls.clear();
      transport->Call(
          voter, req.SerializeAsString(),
          [w = weak_from_this(), calls = std::move(weak_calls)](StatusOr<std::string> r,
                                                                bool sent) mutable {
            auto self = w.lock();
            if (!self) return;
            self->Post([calls = std::move(calls), r = std::move(r), sent](Impl& s) mutable {
              std::optional<pb::Reply> reply;
              if (r.ok()) {
                pb::Reply parsed;
                if (parsed.ParseFromString(*r)) reply = std::move(parsed);
              }
              for (size_t i = 0; i < calls.size(); ++i) {
                std::shared_ptr<ForwardCall> owned = calls[i].lock();
                if (!owned || owned->settled) continue;  // Answered by its timer already.
                ForwardCall& call = *owned;
                call.settled = true;
                call.timer.cancel();
                if (!r.ok()) {
                  // Never sent, or a read: trying the next voter cannot apply anything twice.
                  if ((!sent || call.op.read) && call.op.seg_proposer.empty()) {
                    s.Forward(call.key, std::move(call.op), std::move(call.tried), call.to_leader);
                    continue;
                  }
                  s.forwards_failed->Inc();
                  s.Reply(call.op, Status::Unavailable(fmt::format("lost the link to voter {}; {}",
                                                                   call.voter, kMaybeApplied)));
                  continue;
                }
                if (!reply || i >= static_cast<size_t>(reply->results_size())) {
                  s.forwards_failed->Inc();
                  s.Reply(call.op,
                          Status::Unavailable("malformed answer from voter " + call.voter));
                  continue;
                }
                const pb::Reply& one = reply->results(static_cast<int>(i));
                if (!one.ok()) {
                  s.forwards_failed->Inc();
                  s.Reply(call.op, FromReply(one));
                  continue;
                }
                StrongResult result{one.result(), one.updated_at_ms(), call.voter};
                if (!one.key().empty()) {
                  StatusOr<storage::StoredRegister> reg = storage::DecodeRegister(one.key());
                  if (!reg.ok()) {
                    s.forwards_failed->Inc();
                    s.Reply(call.op,
                            Status::Unavailable("malformed answer from voter " + call.voter));
                    continue;
                  }
                  result.reg = std::move(reg->reg);
                  result.existed = one.existed();
                  result.size = static_cast<size_t>(std::max<int64_t>(0, one.result()));
                }
                s.forwards_ok->Inc();
                s.Reply(call.op, std::move(result));
              }
            });
          });
    }
  }
}

void StrongService::Impl::TrimKeyStates() {
  for (auto it = keys.begin(); it != keys.end();) {
    KeyState& ks = it->second;
    if (!KeyOfInstance(it->first) || ks.busy() || !ks.queue.empty() || ks.handed_over > 0) {
      ++it;
      continue;
    }
    DropPrepared(ks);
    it = keys.erase(it);  // Its timers go with it; their handlers see the cancellation.
  }
}

StatusOr<pb::AcceptorRecord*> StrongService::Impl::Acceptor(const std::string& instance) {
  auto it = acceptors.find(instance);
  if (it != acceptors.end()) return &it->second;
  pb::AcceptorRecord rec;
  if (KeyOfInstance(instance)) {
    StatusOr<std::string> bytes = store->Get(storage::StrongKey(instance));
    if (!bytes.ok() && bytes.status().code() != StatusCode::kNotFound) return bytes.status();
    if (bytes.ok() && !rec.ParseFromString(*bytes)) {
      return Status::InvalidArgument("stored strong acceptor state is unreadable");
    }
  }
  return &acceptors.emplace(instance, std::move(rec)).first->second;
}

void StrongService::Impl::ReleaseAcceptor(const std::string& instance) {
  if (!KeyOfInstance(instance)) return;
  auto w = acceptor_writes.find(instance);
  if (w != acceptor_writes.end() && w->second > 0) return;  // Its latest change is not stored yet.
  if (w != acceptor_writes.end()) acceptor_writes.erase(w);
  acceptors.erase(instance);
}

void StrongService::Impl::Persist(const std::string& key, const pb::AcceptorRecord& rec,
                                  pb::Reply reply, std::function<void(pb::Reply)> done) {
  counters->PutRecord(
      storage::StrongKey(key), rec.SerializeAsString(),
      [w = weak_from_this(), reply = std::move(reply), done = std::move(done)](Status s) mutable {
        auto self = w.lock();
        if (!self) return;
        // Answer only what is on disk: a promise or accept that was not stored is not given.
        self->Post(
            [s = std::move(s), reply = std::move(reply), done = std::move(done)](Impl&) mutable {
              done(s.ok() ? std::move(reply)
                          : Failure(Status::Unavailable("acceptor storage: " + s.message())));
            });
      });
}

void StrongService::Impl::Handle(const std::string& from, const pb::Request& req,
                                 std::function<void(pb::Reply)> reply) {
  const bool from_voter =
      std::find(options.voters.begin(), options.voters.end(), from) != options.voters.end();
  if (my_index < 0) {
    return reply(Failure(Status::Unavailable(
        fmt::format("{} is not a strong voter (its --strong-voters differs from the caller's?)",
                    options.region))));
  }
  switch (req.body_case()) {
    case pb::Request::kPrepare:
    case pb::Request::kAccept: {
      const std::string& key = req.has_prepare() ? req.prepare().key() : req.accept().key();
      if (!from_voter || !ValidateInstance(key).ok()) {
        return reply(Failure(Status::InvalidArgument("refused: not a voter, or a bad key")));
      }
      if (req.has_accept() && KeyOfInstance(key) && !RegisterKey(req.accept().value()).ok()) {
        return reply(Failure(Status::InvalidArgument("refused: a malformed key register")));
      }
      StatusOr<pb::AcceptorRecord*> loaded = Acceptor(key);
      if (!loaded.ok()) {
        return reply(
            Failure(Status::Unavailable("acceptor storage: " + loaded.status().message())));
      }
      pb::AcceptorRecord& rec = **loaded;
      if (req.has_accept() && from != options.region) {
        // The leader's rounds of the operations this voter sends it do not count: otherwise a
        // counter once shared would stay with the leader for as long as this voter writes it.
        KeyState& ks = keys[key];
        const auto now = SteadyClock::now();
        if (!(from == options.voters[0] && now < ks.led_until)) {
          ks.shared_until = now + kSharedWindow;
        }
      }
      bool changed = false;
      pb::Reply r = req.has_prepare() ? OnPrepare(&rec, req.prepare().ballot(), &changed)
                                      : OnAccept(&rec, req.accept().ballot(), req.accept().value(),
                                                 req.accept().next(), &changed);
      if (r.ok() && req.has_accept() && from != options.region) {
        Watch(key, req.accept().value(), SteadyClock::now());
      }
      if (!changed) {
        ReleaseAcceptor(key);
        return reply(std::move(r));
      }
      ++acceptor_writes[key];
      return Persist(key, rec, std::move(r), [this, key, reply = std::move(reply)](pb::Reply r) {
        --acceptor_writes[key];
        ReleaseAcceptor(key);
        reply(std::move(r));
      });
    }
    case pb::Request::kForward: {
      const pb::Forward& f = req.forward();
      if (Status s = ValidateInstance(f.key()); !s.ok()) return reply(Failure(s));
      const bool is_key = KeyOfInstance(f.key()).has_value();
      if (f.ops_size() == 0 || static_cast<size_t>(f.ops_size()) > 4 * options.max_batch) {
        return reply(Failure(Status::InvalidArgument("a forward carries 1 to 1024 operations")));
      }
      // Every key write is checked before any operation is queued: the message is refused whole.
      std::vector<service::RegisterWrite> writes(is_key ? static_cast<size_t>(f.ops_size()) : 0);
      for (int i = 0; is_key && i < f.ops_size(); ++i) {
        if (f.ops(i).read()) continue;
        StatusOr<service::RegisterWrite> w = DecodeKeyWrite(f.ops(i).write());
        if (!w.ok()) return reply(Failure(w.status()));
        writes[static_cast<size_t>(i)] = std::move(w).value();
      }
      // One answer for the whole message, once every operation in it is decided.
      struct Collect {
        pb::Reply out;
        int pending = 0;
        std::function<void(pb::Reply)> reply;
      };
      auto collect = std::make_shared<Collect>();
      collect->out.set_ok(true);
      collect->pending = f.ops_size();
      collect->reply = std::move(reply);
      for (int i = 0; i < f.ops_size(); ++i) collect->out.add_results();
      const auto now = SteadyClock::now();
      for (int i = 0; i < f.ops_size(); ++i) {
        Pending op;
        op.read = f.ops(i).read();
        op.delta = f.ops(i).delta();
        if (is_key && !op.read) op.write = std::move(writes[static_cast<size_t>(i)]);
        op.start = now;
        op.deadline = now + std::min<std::chrono::milliseconds>(
                                options.timeout, std::chrono::milliseconds(f.timeout_ms()));
        if (!f.proposer().empty() && from_voter && f.batch() > 0) {
          op.seg_proposer = f.proposer();
          op.seg_batch = f.batch();
        }
        op.done = [collect, i](StatusOr<StrongResult> r) {
          pb::Reply& one = *collect->out.mutable_results(i);
          if (r.ok()) {
            one.set_ok(true);
            one.set_result(r->reg ? static_cast<int64_t>(r->size) : r->value);
            one.set_updated_at_ms(r->updated_at_ms);
            if (r->reg) {
              one.set_key(storage::EncodeRegister(*r->reg));
              one.set_existed(r->existed);
            }
          } else {
            one = Failure(r.status());
          }
          if (--collect->pending == 0) collect->reply(std::move(collect->out));
        };
        keys[f.key()].queue.push_back(std::move(op));
      }
      // Every operation of the message is queued before a round starts, so a handed-over batch
      // is never split across two rounds. A non-voter's operations follow the same route as
      // this voter's own; a voter's were sent here because this voter leads, and are proposed
      // here whatever happens.
      MaybeStart(f.key(), /*may_lead_elsewhere=*/!from_voter);
      return;
    }
    case pb::Request::BODY_NOT_SET:
      break;
  }
  reply(Failure(Status::InvalidArgument("empty strong request")));
}

StrongService::StrongService(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

StatusOr<std::unique_ptr<StrongService>> StrongService::Open(StrongOptions options,
                                                             storage::Store* store,
                                                             service::Keyspace* counters,
                                                             Transport* transport,
                                                             MetricsRegistry* metrics) {
  if (options.voters.size() > kMaxVoters) return Status::InvalidArgument("too many voters");
  auto impl = std::make_shared<Impl>(std::move(options), store, counters, transport);
  Impl& s = *impl;
  for (size_t i = 0; i < s.options.voters.size(); ++i) {
    if (s.options.voters[i] == s.options.region) s.my_index = static_cast<int>(i);
  }
  s.majority = s.options.voters.size() / 2 + 1;
  if (s.my_index >= 0) {
    Status loaded = store->ForEachWithPrefix(
        storage::kStrongPrefix, [&s](std::string_view key, std::string_view bytes) {
          pb::AcceptorRecord rec;
          if (!rec.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
            return Status::InvalidArgument(fmt::format(
                "stored strong acceptor state of {:?} is unreadable", std::string(key)));
          }
          // A value this acceptor accepted that the local replica lacks may have been chosen
          // just before a crash, its proposer gone before storing it: every accepted value is
          // checked at the first CheckWatch, as one just accepted from another proposer would be
          // later. Keys' records stay in the store (Acceptor).
          s.Watch(std::string(key), rec.value(), SteadyClock::now() - kWatchDelay);
          if (!KeyOfInstance(key)) s.acceptors.emplace(std::string(key), std::move(rec));
          return Status::Ok();
        });
    if (!loaded.ok()) return loaded;
    // A new life: ballots carry the incarnation, so none used before a crash is reused.
    StatusOr<std::string> stored = store->GetOrCreateMeta("strong-incarnation", "0");
    if (!stored.ok()) return stored.status();
    uint64_t previous = 0;
    auto [ptr, ec] = std::from_chars(stored->data(), stored->data() + stored->size(), previous);
    if (ec != std::errc() || ptr != stored->data() + stored->size()) {
      return Status::InvalidArgument("malformed strong-incarnation record \"" + *stored + "\"");
    }
    s.incarnation = previous + 1;
    std::promise<Status> written;
    counters->PutRecord(storage::MetaKey("strong-incarnation"), std::to_string(s.incarnation),
                        [&written](Status st) { written.set_value(std::move(st)); });
    if (Status st = written.get_future().get(); !st.ok()) return st;
  }
  s.proposer = fmt::format("{}/{}", s.options.region, s.incarnation);

  const std::string ops_help = "Strong operations answered by this node, by outcome.";
  s.ops_ok = &metrics->AddCounter("edgestate_strong_operations_total", ops_help, "result=\"ok\"");
  s.ops_unavailable =
      &metrics->AddCounter("edgestate_strong_operations_total", ops_help, "result=\"unavailable\"");
  s.ops_rejected =
      &metrics->AddCounter("edgestate_strong_operations_total", ops_help, "result=\"rejected\"");
  const std::string rounds_help =
      "Consensus rounds this voter proposed: full (prepare and accept) or fast (accept only, "
      "its previous accept having secured the prepare).";
  s.rounds_full =
      &metrics->AddCounter("edgestate_strong_rounds_total", rounds_help, "phase=\"full\"");
  s.rounds_fast =
      &metrics->AddCounter("edgestate_strong_rounds_total", rounds_help, "phase=\"fast\"");
  s.conflicts = &metrics->AddCounter("edgestate_strong_conflicts_total",
                                     "Rounds that lost to another proposer or missed a majority, "
                                     "and were retried after back-off.");
  s.replays = &metrics->AddCounter(
      "edgestate_strong_replays_total",
      "Retried rounds that found their batch already chosen (answered from it, not re-applied).");
  const std::string fwd_help = "Strong operations this node forwarded to a voter, by outcome.";
  s.forwards_ok =
      &metrics->AddCounter("edgestate_strong_forwards_total", fwd_help, "result=\"ok\"");
  s.forwards_failed =
      &metrics->AddCounter("edgestate_strong_forwards_total", fwd_help, "result=\"failed\"");
  s.led = &metrics->AddCounter(
      "edgestate_strong_led_total",
      "Operations this voter sent to the leading voter (the first of --strong-voters) because "
      "another voter was proposing for their counter.");
  s.handovers = &metrics->AddCounter(
      "edgestate_strong_handovers_total",
      "Batches this voter proposed, lost to another proposer, and handed to the leader to "
      "finish under its identity.");
  s.redecided = &metrics->AddCounter(
      "edgestate_strong_redecided_total",
      "Counters this voter decided again because a value it accepted had not reached its "
      "replica in time (its proposer may have died before storing it).");
  s.batch_size = &metrics->AddHistogram("edgestate_strong_batch_size",
                                        "Operations decided together in one consensus round.",
                                        ExponentialBuckets(1, 2, 10));
  s.forward_batch =
      &metrics->AddHistogram("edgestate_strong_forward_batch_size",
                             "Operations on one counter sent to a voter in one forward message.",
                             ExponentialBuckets(1, 2, 10));
  s.latency = &metrics->AddHistogram("edgestate_strong_seconds",
                                     "Latency of strong operations answered by this node.",
                                     ExponentialBuckets(0.0005, 2, 14));
  for (const std::string& v : s.options.voters) {
    if (v == s.options.region) continue;
    metrics->AddGauge(
        "edgestate_strong_voter_reachable", "1 while the link to this strong voter is established.",
        [transport, v] { return transport->LinkRttUs(v) ? 1.0 : 0.0; },
        fmt::format("voter=\"{}\"", v));
  }

  transport->SetCallHandler([w = std::weak_ptr<Impl>(impl)](const std::string& from,
                                                            std::string payload,
                                                            Transport::Reply reply) {
    auto self = w.lock();
    if (!self) return;
    self->Post([from, payload = std::move(payload), reply = std::move(reply)](Impl& s) mutable {
      pb::Request req;
      if (!req.ParseFromString(payload)) {
        return reply(
            Failure(Status::InvalidArgument("malformed strong request")).SerializeAsString());
      }
      s.Handle(from, req,
               [reply = std::move(reply)](pb::Reply r) { reply(r.SerializeAsString()); });
    });
  });
  if (s.my_index >= 0) {
    s.watch_timer = std::make_unique<asio::steady_timer>(s.ioc);
    asio::post(s.ioc, [impl = impl.get()] {
      if (!impl->stopping) impl->CheckWatch();
    });
  }
  s.work.emplace(s.ioc.get_executor());
  s.thread = std::thread([impl] {
    NameThisThread("es-strong");
    impl->ioc.run();
  });
  return std::unique_ptr<StrongService>(new StrongService(std::move(impl)));
}

StrongService::~StrongService() { Stop(); }

bool StrongService::enabled() const { return !impl_->options.voters.empty(); }

void StrongService::Submit(std::string name, bool read, int64_t delta, Callback done) {
  Impl::Pending op;
  op.read = read;
  op.delta = delta;
  op.done = std::move(done);
  impl_->Submit(std::move(name), std::move(op));
}

void StrongService::SubmitKey(std::string key, bool read, service::RegisterWrite write,
                              Callback done) {
  Impl::Pending op;
  op.read = read;
  op.write = std::move(write);
  op.done = std::move(done);
  impl_->Submit(KeyInstance(key), std::move(op));
}

void StrongService::Impl::Submit(std::string instance, Pending op) {
  op.start = SteadyClock::now();
  op.deadline = op.start + options.timeout;
  {
    std::lock_guard lock(mu);
    if (!stopped) {
      asio::post(ioc, [this, instance = std::move(instance), op = std::move(op)]() mutable {
        if (stopping) return op.done(Status::Unavailable("node is shutting down"));
        Start(std::move(instance), std::move(op));
      });
      return;
    }
  }
  op.done(Status::Unavailable("node is shutting down"));
}

std::string StrongService::StatusJson() const {
  const Impl& s = *impl_;
  nlohmann::json voters = nlohmann::json::array();
  for (const std::string& v : s.options.voters) {
    nlohmann::json j = {{"region", v}};
    if (v == s.options.region) {
      j["reachable"] = true;
      j["rtt_ms"] = 0;
    } else {
      std::optional<int64_t> rtt = s.transport->LinkRttUs(v);
      j["reachable"] = rtt.has_value();
      j["rtt_ms"] = rtt ? nlohmann::json(static_cast<double>(*rtt) / 1000.0) : nlohmann::json();
    }
    voters.push_back(std::move(j));
  }
  nlohmann::json out = {
      {"enabled", !s.options.voters.empty()},
      {"role", s.options.voters.empty() ? "none"
               : s.my_index >= 0        ? "voter"
                                        : "forwarder"},
      {"voters", std::move(voters)},
      {"timeout_ms", s.options.timeout.count()},
      {"operations",
       {{"ok", s.ops_ok->value()},
        {"unavailable", s.ops_unavailable->value()},
        {"rejected", s.ops_rejected->value()}}},
      {"rounds", {{"full", s.rounds_full->value()}, {"fast", s.rounds_fast->value()}}},
      {"conflicts", s.conflicts->value()},
      {"replays", s.replays->value()},
      {"forwards", {{"ok", s.forwards_ok->value()}, {"failed", s.forwards_failed->value()}}},
      {"sent_to_leader", s.led->value()},
      {"handovers", s.handovers->value()},
      {"redecided", s.redecided->value()},
      {"leader", s.options.voters.empty() ? nlohmann::json() : nlohmann::json(s.options.voters[0])},
  };
  if (s.my_index >= 0) out["incarnation"] = s.incarnation;
  return out.dump();
}

void StrongService::Stop() {
  Impl& s = *impl_;
  {
    std::lock_guard lock(s.mu);
    if (s.stopped) return;
    s.stopped = true;
  }
  asio::post(s.ioc, [&s] {
    s.stopping = true;
    Status down = Status::Unavailable("node is shutting down");
    for (auto& [name, ks] : s.keys) {
      for (auto& op : ks.batch) op.done(down);
      for (auto& op : ks.queue) op.done(down);
      ks.batch.clear();
      ks.queue.clear();
      if (ks.deadline_timer) ks.deadline_timer->cancel();
      if (ks.backoff_timer) ks.backoff_timer->cancel();
    }
    for (auto& weak : s.forwards) {
      auto call = weak.lock();
      if (!call || call->settled) continue;
      call->settled = true;
      call->timer.cancel();
      call->op.done(down);
    }
    s.forwards.clear();
    if (s.watch_timer) s.watch_timer->cancel();
  });
  s.work.reset();
  if (s.thread.joinable()) s.thread.join();
}

}  // namespace edgestate::strong
