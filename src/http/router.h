// Routing: maps a request target to a route and the path parameters it carries. Pure code.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace edgestate::http {

enum class Route : int {
  kNone = 0,          // No route matched (404), or the request never reached routing.
  kIncrement,         // POST /increment            (article-compatible)
  kRead,              // GET  /read                 (article-compatible)
  kHealth,            // GET  /health
  kMetrics,           // GET  /metrics
  kCounter,           // GET  /v1/counters/{name}
  kCounterIncrement,  // POST /v1/counters/{name}/increment
  kCluster,           // GET  /v1/cluster
  kKey,               // GET, PUT, DELETE /v1/kv/{key}
  kKeyTouch,          // POST /v1/kv/{key}/touch
  kKeyList,           // GET  /v1/kv
  kCacheEntry,        // GET, PUT, DELETE /v1/cache/{key}
  kCachePurge,        // POST /v1/cache/purge
  kCount,
};

// The route's path template, used as the metrics label ("/v1/counters/{name}").
std::string_view RouteLabel(Route r);
// The methods a route accepts, as an Allow header value ("GET" or "GET, PUT, DELETE").
std::string_view AllowedMethods(Route r);
// True when `method` is one of AllowedMethods(r).
bool MethodAllowed(Route r, std::string_view method);

struct RouteMatch {
  Route route = Route::kNone;
  std::string name;  // Percent-decoded {name} or {key}.
  Status error;      // InvalidArgument when {name} has a malformed percent escape.
};

// Matches the path of `target` (query string ignored). Never fails for unknown paths: those
// return Route::kNone.
RouteMatch MatchRoute(std::string_view target);

// Decodes %XX escapes. InvalidArgument on a truncated or non-hex escape.
StatusOr<std::string> PercentDecode(std::string_view s);

// The percent-decoded value of query parameter `name` in `target`; std::nullopt when absent.
// InvalidArgument when it appears twice or has a malformed escape.
StatusOr<std::optional<std::string>> QueryParam(std::string_view target, std::string_view name);

}  // namespace edgestate::http
