// Api: the HTTP API of DESIGN.md section 3 over Keyspace.
//
//   POST /increment                      -> {"value":N,"region":R}
//   GET  /read                           -> {"value":N,"region":R,"lastUpdated":ISO|null}
//   GET  /health                         -> 200 {"status":"healthy",...} | 503
//   GET  /metrics                        -> Prometheus text
//   GET  /v1/counters/{name}             -> {"name","value","region","updated_at","staleness_ms"}
//   GET  /v1/cluster                     -> this node, its peers, link state, lag
//   POST /v1/counters/{name}/increment   body optional {"delta": int64}
//   GET, PUT, DELETE /v1/kv/{key}        keys (sessions): docs/keys.md
//   POST /v1/kv/{key}/touch?ttl_ms=N     extends a key's TTL
//   GET  /v1/kv?prefix=P&limit=N&after=K lists live keys
//   GET, PUT, DELETE /v1/cache/{key}     geo cache: docs/cache.md
//   POST /v1/cache/purge {"prefix": P}   purges in every region
//
// Every failure is a JSON error body (http/errors.h). When an API key is configured, every
// route but /health needs "Authorization: Bearer <key>" (compared in constant time).
//
// Consistency (docs/consistency.md): the four state routes take a level (query parameter
// `consistency`, header Edgestate-Consistency, else ApiOptions::default_level) and a session
// token (header Edgestate-Session, or the edgestate_session cookie with session_cookie); they
// pass the ConsistencyGate before touching state, and every response of theirs carries the
// session's new token: the merge of the one sent and this node's position after the operation.
//
// Thread-safety: Handle may be called concurrently from every I/O thread.
#pragma once

#include <string>

#include "common/metrics.h"
#include "common/status.h"
#include "consistency/consistency.h"
#include "http/handler.h"
#include "http/origin.h"
#include "service/cluster_view.h"
#include "service/consistency_gate.h"
#include "service/keyspace.h"
#include "strong/strong_service.h"

namespace edgestate::http {

// The counter behind the article-compatible /increment and /read.
inline constexpr std::string_view kDefaultCounter = "default";

struct ApiOptions {
  std::string region;
  std::string api_key;   // Empty: no authentication.
  std::string data_dir;  // Reported by /health.
  // For requests that name no level. Not kBounded (which needs an M per request).
  consistency::Level default_level = consistency::Level::kLocal;
  // Also read the session token from, and set it in, the cookie edgestate_session.
  bool session_cookie = false;
  // Cache fills whose origin response names no lifetime (docs/cache.md).
  int64_t cache_default_ttl_ms = 60'000;
};

// The private metrics listener's handler (--metrics-listen): GET /metrics without the API key,
// for a scraper on the private network; every other path is 404, other methods 405. `metrics`
// must outlive it. Thread-safety: Handle may be called concurrently.
class MetricsEndpoint final : public Handler {
 public:
  explicit MetricsEndpoint(MetricsRegistry* metrics) : metrics_(metrics) {}
  std::optional<Response> Handle(const Request& req,
                                 const std::function<Responder()>& defer) override;

 private:
  MetricsRegistry* const metrics_;
};

// Parses an increment body: empty (or only whitespace) means delta 1; otherwise a JSON object
// whose only allowed member is "delta", an integer in int64 range. InvalidArgument otherwise.
StatusOr<int64_t> ParseIncrementBody(std::string_view body);

class Api : public Handler {
 public:
  // `counters`, `cluster`, `gate`, `metrics`, `strong` and `origin` must outlive the Api.
  // Without `strong`, consistency=strong is refused (503 strong_unavailable); without
  // `origin`, a cache miss is 404.
  Api(ApiOptions options, service::Keyspace* counters, const service::ClusterView* cluster,
      service::ConsistencyGate* gate, MetricsRegistry* metrics,
      strong::StrongService* strong = nullptr, OriginClient* origin = nullptr);

  std::optional<Response> Handle(const Request& req,
                                 const std::function<Responder()>& defer) override;

 private:
  // One operation on state, run once the gate admits it.
  struct StateOp {
    Route route = Route::kNone;
    bool write = false;  // Changes state (an increment, PUT, DELETE, touch or purge).
    bool purge = false;  // A cache purge: `name` is its pattern ("=key" or "*prefix").
    std::string name;
    int64_t delta = 0;  // Increments.
    service::Requirement requirement;
    service::RegisterWrite register_write;  // Key and cache writes.
    std::string prefix, after;              // Listings.
    size_t limit = 0;                       // Listings.
    int refills = 0;  // Cache misses: times the fill this request waited for was released.
    bool only_if_cached = false;  // Cache reads: never fetch (Cache-Control: only-if-cached).
  };
  // Parses the level and session token of a state route into *out; the error response if
  // they are malformed.
  std::optional<Response> ParseRequirement(const Request& req, Route route,
                                           service::Requirement* out) const;
  // Admits `op` through the gate and runs it (Run / Execute).
  std::optional<Response> Admit(StateOp op, const std::function<Responder()>& defer);
  // Runs an admitted `op`, answering through `respond`.
  void Execute(StateOp op, Responder respond);
  // Key and cache routes (kv_api.cc): parse the request into a StateOp, or answer it.
  std::optional<Response> HandleRegister(const Request& req, RouteMatch m,
                                         const std::function<Responder()>& defer);
  Response ReadRegister(const StateOp& op) const;
  Response ListRegisters(const StateOp& op) const;
  void WriteRegister(StateOp op, Responder respond);
  // A cache miss: fetch from the origin, store (unless the origin forbids it), answer.
  void FillFromOrigin(StateOp op, Responder respond);
  // The refusal when the bounded level's bound rose above M after the gate admitted a read;
  // std::nullopt when the read may be served. *staleness gets the bound.
  std::optional<Response> CheckBound(const StateOp& op, std::optional<int64_t>* staleness) const;
  std::optional<Response> Increment(StateOp op, Responder respond);
  std::optional<Response> Health(const std::function<Responder()>& defer);
  Response Read(const StateOp& op) const;
  // A strong read or increment (docs/strong.md), answered through `respond`.
  void Strong(StateOp op, Responder respond);
  // A key's read or write with consistency=strong, through the voters (docs/keys.md).
  void StrongRegister(StateOp op, Responder respond);
  // Runs `op` now (reads return their response; increments answer through `respond`).
  std::optional<Response> Run(StateOp op, const std::function<Responder()>& defer);
  // The response for a verdict that refuses.
  Response Refusal(Route route, const service::Verdict& v) const;
  // 503 strong_unavailable with the strong layer's message.
  Response StrongUnavailable(Route route, const Status& s) const;
  // Adds Edgestate-Session (and Set-Cookie) holding Merge(token, this node's position now).
  void AddSessionToken(const std::optional<consistency::Position>& token, Response* r) const;

  const ApiOptions options_;
  service::Keyspace* const counters_;
  const service::ClusterView* const cluster_;
  service::ConsistencyGate* const gate_;
  MetricsRegistry* const metrics_;
  strong::StrongService* const strong_;
  OriginClient* const origin_;
  Counter* auth_failures_;
  Counter* cache_hits_;
  Counter* cache_misses_;
};

}  // namespace edgestate::http
