// HTTP request metrics: requests by route and status, and latency by route.
// Thread-safety: Record is lock-free after the first request of each (route, status) pair.
#pragma once

#include <array>
#include <atomic>

#include "common/metrics.h"
#include "http/router.h"

namespace edgestate::http {

class HttpMetrics {
 public:
  explicit HttpMetrics(MetricsRegistry* registry);
  void Record(Route route, unsigned status, double seconds);
  MetricsRegistry* registry() const { return registry_; }

 private:
  static constexpr int kRoutes = static_cast<int>(Route::kCount);
  static constexpr int kStatuses = 600;
  MetricsRegistry* const registry_;
  // Lazily registered series; registration is idempotent so a lost race is harmless.
  std::unique_ptr<std::atomic<Counter*>[]> requests_;  // [route * kStatuses + status]
  std::array<Histogram*, kRoutes> latency_;
};

}  // namespace edgestate::http
