// Api: the HTTP API of DESIGN.md section 3 over CounterService.
//
//   POST /increment                      -> {"value":N,"region":R}
//   GET  /read                           -> {"value":N,"region":R,"lastUpdated":ISO|null}
//   GET  /health                         -> 200 {"status":"healthy",...} | 503
//   GET  /metrics                        -> Prometheus text
//   GET  /v1/counters/{name}             -> {"name","value","region","updated_at","staleness_ms"}
//   GET  /v1/cluster                     -> this node, its peers, link state, lag
//   POST /v1/counters/{name}/increment   body optional {"delta": int64}
//
// Every failure is a JSON error body (http/errors.h). When an API key is configured, every
// route but /health needs "Authorization: Bearer <key>" (compared in constant time).
//
// Thread-safety: Handle may be called concurrently from every I/O thread.
#pragma once

#include <string>

#include "common/metrics.h"
#include "common/status.h"
#include "http/handler.h"
#include "service/cluster_view.h"
#include "service/counter_service.h"

namespace edgestate::http {

// The counter behind the article-compatible /increment and /read.
inline constexpr std::string_view kDefaultCounter = "default";

struct ApiOptions {
  std::string region;
  std::string api_key;   // Empty: no authentication.
  std::string data_dir;  // Reported by /health.
};

// Parses an increment body: empty (or only whitespace) means delta 1; otherwise a JSON object
// whose only allowed member is "delta", an integer in int64 range. InvalidArgument otherwise.
StatusOr<int64_t> ParseIncrementBody(std::string_view body);

class Api : public Handler {
 public:
  // `counters`, `cluster` and `metrics` must outlive the Api.
  Api(ApiOptions options, service::CounterService* counters, const service::ClusterView* cluster,
      MetricsRegistry* metrics);

  std::optional<Response> Handle(const Request& req,
                                 const std::function<Responder()>& defer) override;

 private:
  std::optional<Response> Increment(Route route, std::string name, int64_t delta,
                                    const std::function<Responder()>& defer);
  std::optional<Response> Health(const std::function<Responder()>& defer);
  Response Read(Route route, std::string_view name) const;

  const ApiOptions options_;
  service::CounterService* const counters_;
  const service::ClusterView* const cluster_;
  MetricsRegistry* const metrics_;
  Counter* auth_failures_;
};

}  // namespace edgestate::http
