// The one mapping from Status codes to HTTP, and the JSON error body every failure carries:
//   {"error":{"code":"bad_request","message":"..."}}
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace edgestate::http {

// InvalidArgument/OutOfRange 400, Unauthenticated 401, NotFound 404, FailedPrecondition 409,
// ResourceExhausted (overload) and Unavailable 503, DeadlineExceeded 504, everything else 500.
unsigned HttpStatusFor(StatusCode code);

// The error code string for a Status code: "overloaded" for ResourceExhausted, otherwise
// ErrorCodeFor(HttpStatusFor(code)).
std::string_view ErrorCodeFor(StatusCode code);

// The error code string for an HTTP status ("bad_request", "not_found", ...).
std::string_view ErrorCodeFor(unsigned http_status);

// {"error":{"code":<code>,"message":<message>}} with both strings JSON-escaped.
std::string ErrorBody(std::string_view code, std::string_view message);

}  // namespace edgestate::http
