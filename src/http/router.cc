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
    case Route::kKey:
      return "/v1/kv/{key}";
    case Route::kKeyTouch:
      return "/v1/kv/{key}/touch";
    case Route::kKeyList:
      return "/v1/kv";
    case Route::kCacheEntry:
      return "/v1/cache/{key}";
    case Route::kCachePurge:
      return "/v1/cache/purge";
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
    case Route::kKeyTouch:
    case Route::kCachePurge:
      return "POST";
    case Route::kKey:
    case Route::kCacheEntry:
      return "GET, PUT, DELETE";
    default:
      return "GET";
  }
}

bool MethodAllowed(Route r, std::string_view method) {
  std::string_view allowed = AllowedMethods(r);
  while (!allowed.empty()) {
    size_t comma = allowed.find(", ");
    if (allowed.substr(0, comma) == method) return true;
    allowed = comma == std::string_view::npos ? std::string_view() : allowed.substr(comma + 2);
  }
  return false;
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

StatusOr<std::optional<std::string>> QueryParam(std::string_view target, std::string_view name) {
  size_t q = target.find('?');
  if (q == std::string_view::npos) return std::optional<std::string>();
  std::string_view query = target.substr(q + 1);
  query = query.substr(0, query.find('#'));
  std::optional<std::string> found;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = pair.find('=');
    if (pair.substr(0, eq) != name) continue;
    if (found) {
      return Status::InvalidArgument("query parameter " + std::string(name) + " appears twice");
    }
    StatusOr<std::string> value =
        PercentDecode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
    if (!value.ok()) return value.status();
    found = std::move(value).value();
  }
  return found;
}

namespace {

// {key} of a key or cache route: percent-decoded into m->name (or m->error).
void DecodeName(std::string_view raw, RouteMatch* m) {
  StatusOr<std::string> name = PercentDecode(raw);
  if (name.ok()) {
    m->name = std::move(name).value();
  } else {
    m->error = name.status();
  }
}

}  // namespace

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
  } else if (path == "/v1/kv" || path == "/v1/kv/") {
    m.route = Route::kKeyList;
  } else if (constexpr std::string_view kKv = "/v1/kv/"; path.starts_with(kKv)) {
    // Keys may hold raw slashes; one ending in "/touch" must encode that slash (%2F).
    std::string_view rest = path.substr(kKv.size());
    constexpr std::string_view kTouch = "/touch";
    if (rest.size() > kTouch.size() && rest.ends_with(kTouch)) {
      m.route = Route::kKeyTouch;
      rest.remove_suffix(kTouch.size());
    } else {
      m.route = Route::kKey;
    }
    DecodeName(rest, &m);
  } else if (path == "/v1/cache/purge") {
    m.route = Route::kCachePurge;
  } else if (constexpr std::string_view kCache = "/v1/cache/"; path.starts_with(kCache)) {
    m.route = Route::kCacheEntry;
    DecodeName(path.substr(kCache.size()), &m);
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
