#include "service/consistency_gate.h"

#include <fmt/format.h>

#include "common/handoff.h"
#include "common/thread_name.h"

namespace edgestate::service {

using consistency::Level;
using SteadyClock = std::chrono::steady_clock;

namespace {

Verdict ShuttingDown() {
  Verdict v;
  v.kind = Verdict::Kind::kShuttingDown;
  v.message = "the node is shutting down";
  v.waited = true;
  return v;
}

}  // namespace

ConsistencyGate::ConsistencyGate(ConsistencyGateOptions options, Keyspace* counters,
                                 ClusterView* cluster, const consistency::SessionCodec* codec,
                                 MetricsRegistry* metrics)
    : options_(std::move(options)), counters_(counters), cluster_(cluster), codec_(codec) {
  waited_ = &metrics->AddCounter("edgestate_consistency_waits_total",
                                 "Requests held until this node could serve their consistency.");
  refused_ = &metrics->AddCounter(
      "edgestate_consistency_refusals_total",
      "Requests refused because their consistency could not be served in time.");
  counters_->SetProgressListener([this] { Notify(); });
  cluster_->SetProgressListener([this] { Notify(); });
  thread_ = std::thread([this] {
    NameThisThread("es-gate");
    Loop();
  });
}

ConsistencyGate::~ConsistencyGate() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

consistency::Position ConsistencyGate::NodePosition() const {
  consistency::Position p = counters_->AppliedPositions();
  consistency::SetAt(&p, options_.region, {counters_->epoch(), counters_->CommittedSeq()});
  return p;
}

std::optional<Verdict> ConsistencyGate::Decide(const Requirement& req, bool final,
                                               std::vector<std::string>* pull) const {
  Verdict v;
  if (req.level == Level::kStrong) {
    v.kind = Verdict::Kind::kStrongUnavailable;
    v.message = "strong consistency needs a voter set: start every node with --strong-voters";
    return v;
  }
  bool wait = false;
  if (req.token) {
    consistency::Coverage c = consistency::Covers(NodePosition(), *req.token);
    v.lost = std::move(c.lost);
    v.missing = std::move(c.missing);
    if (!v.lost.empty()) {
      v.kind = Verdict::Kind::kSessionLost;
      v.message = fmt::format(
          "the session saw writes of {} from a data directory that no longer exists; they are "
          "lost: start a new session (drop the token)",
          fmt::join(v.lost, ", "));
      return v;
    }
    if (!v.missing.empty()) {
      if (final) {
        v.kind = Verdict::Kind::kSessionUnavailable;
        v.message = fmt::format(
            "this node has not yet applied the session's writes from {} (waited {} ms); retry, "
            "here or in another region",
            fmt::join(v.missing, ", "), options_.session_wait.count());
        return v;
      }
      pull->insert(pull->end(), v.missing.begin(), v.missing.end());
      wait = true;
    }
  }
  if (req.level == Level::kBounded) {
    const int64_t m = req.max_staleness_ms.value_or(0);
    v.staleness_ms = cluster_->StalenessMs();
    v.floor_ms = cluster_->StalenessFloorMs();
    if (!v.staleness_ms || *v.staleness_ms > m) {
      if (final || !v.floor_ms || m < *v.floor_ms) {
        v.kind = Verdict::Kind::kStalenessUnavailable;
        v.message = !v.floor_ms
                        ? fmt::format("no bound within {} ms: some peer has not been heard from", m)
                    : m < *v.floor_ms
                        ? fmt::format(
                              "max_staleness_ms={} is below the lowest bound this node can reach "
                              "({} ms, a round trip to its farthest peer)",
                              m, *v.floor_ms)
                        : fmt::format("the staleness bound did not fall to {} ms within {} ms", m,
                                      options_.session_wait.count());
        return v;
      }
      wait = true;  // Pull from every peer: the bound is the worst of them.
      pull->clear();
      pull->push_back("");
    }
  }
  if (wait) return std::nullopt;
  v.kind = Verdict::Kind::kServe;
  return v;
}

std::optional<Verdict> ConsistencyGate::TryAdmit(const Requirement& req) {
  if (req.level == Level::kLocal && !req.token) return Verdict{};
  std::vector<std::string> pull;
  std::optional<Verdict> v = Decide(req, /*final=*/false, &pull);
  if (v) {
    if (v->kind != Verdict::Kind::kServe) refused_->Inc();
    return v;
  }
  bool all = !pull.empty() && pull.front().empty();
  cluster_->Pull(all ? std::vector<std::string>{} : pull);
  return std::nullopt;
}

void ConsistencyGate::Wait(Requirement req, std::function<void(Verdict)> done) {
  waited_->Inc();
  {
    std::lock_guard lock(mu_);
    if (!stop_) {
      const auto now = SteadyClock::now();
      pending_.push_back({std::move(req), now, now + options_.session_wait, std::move(done)});
      waiting_.store(pending_.size());
      progressed_ = true;  // The loop recomputes its next deadline.
      cv_.notify_one();
      return;
    }
  }
  done(ShuttingDown());
}

void ConsistencyGate::Notify() {
  if (waiting_.load(std::memory_order_relaxed) == 0) return;
  {
    std::lock_guard lock(mu_);
    progressed_ = true;
  }
  cv_.notify_one();
}

void ConsistencyGate::Loop() {
  std::unique_lock lock(mu_);
  while (true) {
    if (pending_.empty()) {
      cv_.wait(lock, [&] { return stop_ || progressed_; });
    } else {
      SteadyClock::time_point next = pending_.front().deadline;
      for (const Pending& p : pending_) next = std::min(next, p.deadline);
      cv_.wait_until(lock, next,
                     [&] { return stop_ || progressed_ || SteadyClock::now() >= next; });
    }
    if (stop_) break;
    progressed_ = false;
    // Decide outside the lock: Decide reads the counters and the cluster view, and `done`
    // answers the client.
    std::vector<Pending> batch;
    batch.swap(pending_);
    lock.unlock();
    const auto now = SteadyClock::now();
    std::vector<Pending> still;
    {
      // The answers (and the releases of the answered requests) wake each I/O thread once.
      HandoffScope handoffs;
      for (Pending& p : batch) {
        std::vector<std::string> pull;
        std::optional<Verdict> v = Decide(p.req, /*final=*/now >= p.deadline, &pull);
        if (!v) {
          still.push_back(std::move(p));
          continue;
        }
        v->waited = true;
        v->waited_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - p.since).count();
        if (v->kind != Verdict::Kind::kServe) refused_->Inc();
        p.done(std::move(*v));
      }
      batch.clear();
    }
    lock.lock();
    for (Pending& p : still) pending_.push_back(std::move(p));
    waiting_.store(pending_.size());
  }
  std::vector<Pending> left;
  left.swap(pending_);
  waiting_.store(0);
  lock.unlock();
  for (Pending& p : left) p.done(ShuttingDown());
}

}  // namespace edgestate::service
