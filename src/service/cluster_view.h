// ClusterView: what the HTTP layer may ask of replication, without depending on it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace edgestate::service {

class ClusterView {
 public:
  virtual ~ClusterView() = default;
  // A read served now reflects every write acknowledged anywhere in the cluster more than this
  // many milliseconds ago; nullopt while some peer has never been heard from.
  // Thread-safe and cheap (called on every read).
  virtual std::optional<int64_t> StalenessMs() const = 0;
  // The lowest bound StalenessMs can reach with the links as they are: the largest, over
  // peers, of the smallest round trip measured to each (the clock-free bound never goes below
  // a round trip); 0 without peers; nullopt while some peer's round trip is unknown.
  // Thread-safe.
  virtual std::optional<int64_t> StalenessFloorMs() const = 0;
  // Asks the named peer regions (every peer when empty) to ship their writes now rather than
  // at their next interval. Unknown names are ignored. Thread-safe; never blocks.
  virtual void Pull(const std::vector<std::string>& regions) = 0;
  // `listener` is called, from any thread, whenever StalenessMs may have dropped (a peer's
  // heartbeat vouched for more). Set once, before Start; must be cheap and must not block.
  virtual void SetProgressListener(std::function<void()> listener) = 0;
  // The body of GET /v1/cluster (a JSON object). Thread-safe.
  virtual std::string ClusterJson() const = 0;
};

}  // namespace edgestate::service
