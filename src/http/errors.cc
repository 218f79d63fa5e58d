#include "http/errors.h"

#include <nlohmann/json.hpp>

namespace edgestate::http {

unsigned HttpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
      return 400;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kFailedPrecondition:
    case StatusCode::kAborted:
      return 409;
    case StatusCode::kResourceExhausted:
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kDeadlineExceeded:
      return 504;
    case StatusCode::kInternal:
      return 500;
  }
  return 500;
}

std::string_view ErrorCodeFor(unsigned http_status) {
  switch (http_status) {
    case 400:
      return "bad_request";
    case 401:
      return "unauthorized";
    case 404:
      return "not_found";
    case 405:
      return "method_not_allowed";
    case 408:
      return "request_timeout";
    case 409:
      return "conflict";
    case 412:
      return "precondition_failed";
    case 413:
      return "payload_too_large";
    case 429:
      return "too_many_requests";
    case 431:
      return "headers_too_large";
    case 502:
      return "bad_gateway";
    case 503:
      return "unavailable";
    case 504:
      return "timeout";
    default:
      return "internal";
  }
}

std::string_view ErrorCodeFor(StatusCode code) {
  if (code == StatusCode::kResourceExhausted) return "overloaded";
  return ErrorCodeFor(HttpStatusFor(code));
}

std::string ErrorBody(std::string_view code, std::string_view message) {
  nlohmann::json j;
  j["error"]["code"] = code;
  j["error"]["message"] = message;
  // Replace rather than throw on invalid UTF-8: messages may quote hostile input.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace edgestate::http
