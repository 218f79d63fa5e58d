// ClusterView: what the HTTP layer may ask of replication, without depending on it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace edgestate::service {

class ClusterView {
 public:
  virtual ~ClusterView() = default;
  // A read served now reflects every write acknowledged anywhere in the cluster more than this
  // many milliseconds ago; nullopt while some peer has never been heard from.
  // Thread-safe and cheap (called on every read).
  virtual std::optional<int64_t> StalenessMs() const = 0;
  // The body of GET /v1/cluster (a JSON object). Thread-safe.
  virtual std::string ClusterJson() const = 0;
};

}  // namespace edgestate::service
