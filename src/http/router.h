// Routing: maps a request target to a route and the path parameters it carries. Pure code.
#pragma once

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
  kCount,
};

// The route's path template, used as the metrics label ("/v1/counters/{name}").
std::string_view RouteLabel(Route r);
// The methods a route accepts, as an Allow header value ("GET").
std::string_view AllowedMethods(Route r);

struct RouteMatch {
  Route route = Route::kNone;
  std::string name;  // Percent-decoded {name}, for the counter routes.
  Status error;      // InvalidArgument when {name} has a malformed percent escape.
};

// Matches the path of `target` (query string ignored). Never fails for unknown paths: those
// return Route::kNone.
RouteMatch MatchRoute(std::string_view target);

// Decodes %XX escapes. InvalidArgument on a truncated or non-hex escape.
StatusOr<std::string> PercentDecode(std::string_view s);

}  // namespace edgestate::http
