// ConsistencyGate: whether this node may serve a request at the consistency it asks for
// (docs/consistency.md), and waiting, with a deadline, until it may.
//
//   local    always, at once.
//   session  once this node has applied everything the client's token names (per region, in
//            the same data-directory life). While it lacks something the gate pulls from the
//            regions concerned and waits up to `session_wait`; then kSessionUnavailable naming
//            them. A token naming an older life of a region than this node knows can never be
//            served: kSessionLost at once.
//   bounded  once the staleness bound is at most M. When M is below the lowest bound the links
//            can give (StalenessFloorMs), or nothing was heard yet from some peer:
//            kStalenessUnavailable at once. Otherwise pull from every peer and wait up to
//            `session_wait`. Writers are never slowed for a waiting reader.
//   strong   kStrongUnavailable (strong operations go to strong::StrongService, not the gate).
// A request with a token and level bounded must satisfy both.
//
// Thread-safety: every method may be called from any thread. Wait calls `done` exactly once, on
// the gate's own thread (docs/threading.md), which `done` must not block. Destruction answers
// every pending wait with kShuttingDown.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "consistency/consistency.h"
#include "consistency/session_token.h"
#include "service/cluster_view.h"
#include "service/keyspace.h"

namespace edgestate::service {

struct Requirement {
  consistency::Level level = consistency::Level::kLocal;
  std::optional<int64_t> max_staleness_ms;     // With kBounded.
  std::optional<consistency::Position> token;  // With a session token (any level).
};

struct Verdict {
  enum class Kind {
    kServe,
    kStrongUnavailable,     // 503 strong_unavailable
    kSessionUnavailable,    // 503 session_unavailable (missing names the regions)
    kSessionLost,           // 409 session_lost (lost names the regions)
    kStalenessUnavailable,  // 503 staleness_unavailable (staleness_ms, floor_ms)
    kShuttingDown,          // 503 unavailable
  };
  Kind kind = Kind::kServe;
  std::string message;
  std::vector<std::string> missing;
  std::vector<std::string> lost;
  std::optional<int64_t> staleness_ms;
  std::optional<int64_t> floor_ms;
  bool waited = false;    // The request was held before this verdict ...
  int64_t waited_ms = 0;  // ... for this long.
};

struct ConsistencyGateOptions {
  std::string region;
  std::chrono::milliseconds session_wait{1000};
};

class ConsistencyGate {
 public:
  // `counters`, `cluster` and `codec` must outlive the gate. The gate sets the progress
  // listeners of `counters` and `cluster`, so it must be created before either starts work.
  ConsistencyGate(ConsistencyGateOptions options, Keyspace* counters, ClusterView* cluster,
                  const consistency::SessionCodec* codec, MetricsRegistry* metrics);
  ~ConsistencyGate();

  // This node's position: its own epoch and committed sequence, and the applied life and
  // sequence of every region it has applied writes of (canonical).
  consistency::Position NodePosition() const;

  // The verdict for `req` if it is known now (kServe or a refusal); otherwise nullopt, after
  // asking the regions concerned to ship their writes at once: then call Wait.
  std::optional<Verdict> TryAdmit(const Requirement& req);
  // Holds `req` until it can be served or its wait runs out; see the class comment.
  void Wait(Requirement req, std::function<void(Verdict)> done);

  const consistency::SessionCodec& codec() const { return *codec_; }

 private:
  struct Pending {
    Requirement req;
    std::chrono::steady_clock::time_point since, deadline;
    std::function<void(Verdict)> done;
  };
  // kServe, a final refusal, or nullopt (wait: *pull gets the regions to pull from).
  std::optional<Verdict> Decide(const Requirement& req, bool final,
                                std::vector<std::string>* pull) const;
  void Notify();
  void Loop();

  const ConsistencyGateOptions options_;
  Keyspace* const counters_;
  ClusterView* const cluster_;
  const consistency::SessionCodec* const codec_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Pending> pending_;    // GUARDED_BY(mu_)
  std::atomic<size_t> waiting_{0};  // pending_.size(), readable without the lock.
  bool progressed_ = false;         // GUARDED_BY(mu_)
  bool stop_ = false;               // GUARDED_BY(mu_)
  std::thread thread_;

  Counter* waited_;
  Counter* refused_;
};

}  // namespace edgestate::service
