#include "http/router.h"

namespace edgestate::http {

std::string_view RouteLabel(Route r) {
  switch (r) {
    case Route::kIncrement:
      return "/increment";
    case Route::kRead:
      return "/read";
    case Route::kHealth:
      return "/health";
    case Route::kMetrics:
      return "/metrics";
    case Route::kCounter:
      return "/v1/counters/{name}";
    case Route::kCounterIncrement:
      return "/v1/counters/{name}/increment";
    case Route::kCluster:
      return "/v1/cluster";
    case Route::kNone:
    case Route::kCount:
      break;
  }
  return "none";
}

std::string_view AllowedMethods(Route r) {
  switch (r) {
    case Route::kIncrement:
    case Route::kCounterIncrement:
      return "POST";
    default:
      return "GET";
  }
}

namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

StatusOr<std::string> PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) {
      return Status::InvalidArgument("truncated percent escape in path");
    }
    int hi = HexValue(s[i + 1]), lo = HexValue(s[i + 2]);
    if (hi < 0 || lo < 0) return Status::InvalidArgument("malformed percent escape in path");
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

RouteMatch MatchRoute(std::string_view target) {
  RouteMatch m;
  std::string_view path = target.substr(0, target.find_first_of("?#"));
  if (path == "/increment") {
    m.route = Route::kIncrement;
  } else if (path == "/read") {
    m.route = Route::kRead;
  } else if (path == "/health") {
    m.route = Route::kHealth;
  } else if (path == "/metrics") {
    m.route = Route::kMetrics;
  } else if (path == "/v1/cluster") {
    m.route = Route::kCluster;
  } else if (constexpr std::string_view kPrefix = "/v1/counters/"; path.starts_with(kPrefix)) {
    std::string_view rest = path.substr(kPrefix.size());
    std::string_view raw_name;
    size_t slash = rest.find('/');
    if (slash == std::string_view::npos) {
      m.route = Route::kCounter;
      raw_name = rest;
    } else if (rest.substr(slash) == "/increment") {
      m.route = Route::kCounterIncrement;
      raw_name = rest.substr(0, slash);
    } else {
      return m;  // Unknown sub-resource: 404.
    }
    StatusOr<std::string> name = PercentDecode(raw_name);
    if (name.ok()) {
      m.name = std::move(name).value();
    } else {
      m.error = name.status();
    }
  }
  return m;
}

}  // namespace edgestate::http
