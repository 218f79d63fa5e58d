// The seam between the HTTP transport (server.h) and the API (api.h): a request view in,
// a response out, synchronously or later from any thread.
#pragma once

#include <boost/container/small_vector.hpp>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/router.h"

namespace edgestate::http {

// Views into the connection's parser; valid only during Handler::Handle.
struct Request {
  std::string_view method;  // "GET", "POST", ...
  std::string_view target;  // Origin-form: "/v1/counters/a?x=1".
  std::string_view body;
  std::string_view authorization;       // The Authorization header, or empty.
  std::string_view consistency;         // The Edgestate-Consistency header, or empty.
  std::string_view session;             // The Edgestate-Session header, or empty.
  std::string_view cookie;              // The (first) Cookie header, or empty.
  std::string_view content_type = {};   // Content-Type, or empty.
  std::string_view if_match = {};       // If-Match, or empty.
  std::string_view if_none_match = {};  // If-None-Match, or empty.
  std::string_view ttl_ms = {};         // Edgestate-TTL-Ms, or empty.
  bool has_ttl_ms = false;              // Edgestate-TTL-Ms was present (even empty).
  std::string_view cache_control = {};  // Cache-Control, or empty.
};

struct Response {
  unsigned status = 200;
  std::string body;
  std::string_view content_type = "application/json";  // Must point to static storage.
  std::string owned_content_type;  // When not empty, sent instead of content_type.
  // Names point to static storage. Inline room for the headers a read has (staleness, session
  // token, cookie), so the common response allocates only its body and the token.
  boost::container::small_vector<std::pair<std::string_view, std::string>, 3> headers;
  Route route = Route::kNone;  // For metrics.
};

// Completes a deferred request. Call exactly once, from any thread.
using Responder = std::function<void(Response)>;

class Handler {
 public:
  virtual ~Handler() = default;
  // Returns the response, or std::nullopt after arranging for the Responder obtained from
  // `defer()` to be called later. `defer` may be called at most once per request.
  // Thread-safety: called concurrently from every I/O thread.
  virtual std::optional<Response> Handle(const Request& req,
                                         const std::function<Responder()>& defer) = 0;
};

}  // namespace edgestate::http
