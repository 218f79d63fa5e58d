// StrongService: linearizable counter operations (consistency=strong) over a voter set
// (docs/strong.md).
//
// Voters run CASPaxos per counter: every voter is an acceptor (its state stored, synced,
// through the counter service's group commit before it answers) and proposes the operations
// its clients and the non-voters send it. Concurrent operations on one counter share a round
// (batching); an uncontended proposer's accept also carries its next prepare (one round trip
// per round). A chosen value is applied to the local replica as an own write, so it
// replicates to every region like any increment. Non-voters forward each operation to the
// nearest reachable voter over the peer links.
//
// Failure: an operation that cannot reach a majority of the voters within `timeout` fails
// with Unavailable. An increment that fails after its accept was sent is indeterminate (it may
// have been chosen); a read never returns a value that was not chosen.
//
// Threading: one strong thread runs every proposer and acceptor step; Submit, StatusJson and
// Stop are safe from any thread. Callbacks run on the strong thread and must not block.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"
#include "service/keyspace.h"
#include "storage/store.h"
#include "strong/transport.h"

namespace edgestate::strong {

struct StrongOptions {
  std::string region;
  // The voter regions, the same list on every node; empty: strong operations are refused.
  std::vector<std::string> voters;
  std::chrono::milliseconds timeout{2000};
  size_t max_batch = 256;  // Operations per round.
  // Test builds only (EDGESTATE_FAULT_INJECTION): serve strong reads from the local replica,
  // which is not linearizable; the checker must catch it.
  bool fault_local_reads = false;
};

// Validates a voter list against this node's cluster: 3 or 5 distinct regions, each this
// node's region or a peer. InvalidArgument naming the problem otherwise.
Status ValidateVoters(const std::vector<std::string>& voters, const std::string& region,
                      const std::vector<std::string>& peer_regions);

struct StrongResult {
  int64_t value = 0;
  int64_t updated_at_ms = 0;
  std::string voter;  // The voter that proposed it.
  // Keys: the write read (with its value) or made (without); `existed`: a write replaced a live
  // one; `size`: a write's value bytes.
  std::optional<crdt::LwwRegister> reg = {};
  bool existed = false;
  size_t size = 0;
};

class StrongService {
 public:
  using Callback = std::function<void(StatusOr<StrongResult>)>;

  // Loads the acceptor state, starts a new proposer life (a synced incarnation number, so no
  // ballot is ever reused) and starts the strong thread. `store`, `counters`, `transport` and
  // `metrics` must outlive the service; registers the call handler on `transport`.
  static StatusOr<std::unique_ptr<StrongService>> Open(StrongOptions options, storage::Store* store,
                                                       service::Keyspace* counters,
                                                       Transport* transport,
                                                       MetricsRegistry* metrics);
  ~StrongService();  // Stop().

  bool enabled() const;
  // A strong read (`read`) or increment by `delta` of counter `name` (valid name). `done` gets
  // the linearizable value, Unavailable (no quorum within the timeout, no voter set, stopping),
  // or FailedPrecondition (the increment would overflow).
  void Submit(std::string name, bool read, int64_t delta, Callback done);
  // A strong read (`read`) or write (`write`: a put, delete or touch, with its conditions) of key
  // `key` (valid name, valid write). Linearizable per key, as counters are. `done` gets the
  // write read (NotFound when the key is not live) or made (FailedPrecondition when a condition
  // failed, NotFound for a touch of a key that is not live), or Unavailable as Submit.
  void SubmitKey(std::string key, bool read, service::RegisterWrite write, Callback done);

  // The "strong" member of GET /v1/cluster (a JSON object).
  std::string StatusJson() const;

  // Fails what is pending with Unavailable and joins the thread. Idempotent.
  void Stop();

  struct Impl;

 private:
  explicit StrongService(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace edgestate::strong
