#include "http/http_metrics.h"

#include <fmt/format.h>

namespace edgestate::http {

HttpMetrics::HttpMetrics(MetricsRegistry* registry)
    : registry_(registry),
      requests_(std::make_unique<std::atomic<Counter*>[]>(kRoutes * kStatuses)) {
  for (int i = 0; i < kRoutes * kStatuses; ++i) requests_[i].store(nullptr);
  for (int r = 0; r < kRoutes; ++r) {
    latency_[r] = &registry->AddHistogram(
        "edgestate_http_request_duration_seconds",
        "Time from a complete request to its response being handed to the socket.",
        ExponentialBuckets(0.0000625, 2, 16),
        fmt::format("route=\"{}\"", RouteLabel(static_cast<Route>(r))));
  }
}

void HttpMetrics::Record(Route route, unsigned status, double seconds) {
  int r = static_cast<int>(route);
  if (r < 0 || r >= kRoutes || status >= kStatuses) return;
  std::atomic<Counter*>& slot = requests_[r * kStatuses + status];
  Counter* c = slot.load(std::memory_order_acquire);
  if (c == nullptr) {
    c = &registry_->AddCounter(
        "edgestate_http_requests_total", "HTTP requests by route and status.",
        fmt::format("route=\"{}\",status=\"{}\"", RouteLabel(route), status));
    slot.store(c, std::memory_order_release);
  }
  c->Inc();
  latency_[r]->Observe(seconds);
}

}  // namespace edgestate::http
