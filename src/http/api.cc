#include "http/api.h"

#include <fmt/compile.h>
#include <fmt/format.h>

#include <charconv>
#include <iterator>
#include <nlohmann/json.hpp>

#include "common/strings.h"
#include "env/clock.h"
#include "http/errors.h"

namespace edgestate::http {
namespace {

// Every 503 tells the client when to try again: overload and unavailability both pass.
Response Error(Route route, unsigned status, std::string_view message, std::string_view code = {}) {
  Response r;
  r.status = status;
  r.route = route;
  r.body = ErrorBody(code.empty() ? ErrorCodeFor(status) : code, message);
  if (status == 503) r.headers.emplace_back("Retry-After", "1");
  return r;
}

Response FromStatus(Route route, const Status& s) {
  return Error(route, HttpStatusFor(s.code()), s.message(), ErrorCodeFor(s.code()));
}

// 405 for a method `route` does not take, naming the ones it does.
Response MethodNotAllowed(Route route, std::string_view method) {
  Response r = Error(route, 405,
                     fmt::format("{} does not allow {}; use {}", RouteLabel(route), method,
                                 AllowedMethods(route)));
  r.headers.emplace_back("Allow", std::string(AllowedMethods(route)));
  return r;
}

// GET /metrics, on the client port and on the metrics listener.
Response MetricsResponse(const MetricsRegistry& metrics) {
  Response r;
  r.route = Route::kMetrics;
  r.content_type = "text/plain; version=0.0.4";
  r.body = metrics.Render();
  return r;
}

std::string JsonString(std::string_view s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Appends a JSON string holding the ISO 8601 time, or null for a counter never written.
void AppendIsoOrNull(int64_t ms, std::string* out) {
  if (ms == 0) {
    out->append("null");
    return;
  }
  out->push_back('"');
  AppendIso8601Millis(ms, out);
  out->push_back('"');
}

std::string IsoOrNull(int64_t ms) {
  std::string out;
  AppendIsoOrNull(ms, &out);
  return out;
}

constexpr std::string_view kStalenessHeader = "Edgestate-Staleness-Ms";
constexpr std::string_view kSessionHeader = "Edgestate-Session";
constexpr std::string_view kCookieName = "edgestate_session";
// How often a cache miss re-reads after a fill it waited for was stored or refused before it
// answers with what it read (each round is a purge or a refused fill racing it).
constexpr int kMaxRefills = 3;

// The value of cookie `name` in a Cookie header ("a=1; b=2"), or empty.
std::string_view CookieValue(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    size_t semi = header.find(';');
    std::string_view pair = header.substr(0, semi);
    header = semi == std::string_view::npos ? std::string_view() : header.substr(semi + 1);
    size_t b = pair.find_first_not_of(' ');
    if (b == std::string_view::npos) continue;
    pair.remove_prefix(b);
    size_t eq = pair.find('=');
    if (eq != std::string_view::npos && pair.substr(0, eq) == name) {
      std::string_view v = pair.substr(eq + 1);
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      return v;
    }
  }
  return {};
}

}  // namespace

StatusOr<int64_t> ParseIncrementBody(std::string_view body) {
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return int64_t{1};
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument("request body is not valid JSON");
  if (!j.is_object()) return Status::InvalidArgument("request body must be a JSON object");
  int64_t delta = 1;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() != "delta") {
      return Status::InvalidArgument("unknown field \"" + it.key() + "\"; expected only \"delta\"");
    }
    const nlohmann::json& d = it.value();
    if (d.is_number_unsigned()) {
      if (d.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
        return Status::InvalidArgument("delta is out of the int64 range");
      }
      delta = static_cast<int64_t>(d.get<uint64_t>());
    } else if (d.is_number_integer()) {
      delta = d.get<int64_t>();
    } else if (d.is_number_float()) {
      return Status::InvalidArgument("delta must be an integer in the int64 range");
    } else {
      return Status::InvalidArgument("delta must be an integer");
    }
  }
  return delta;
}

Api::Api(ApiOptions options, service::Keyspace* counters, const service::ClusterView* cluster,
         service::ConsistencyGate* gate, MetricsRegistry* metrics, strong::StrongService* strong,
         OriginClient* origin)
    : options_(std::move(options)),
      counters_(counters),
      cluster_(cluster),
      gate_(gate),
      metrics_(metrics),
      strong_(strong),
      origin_(origin) {
  auth_failures_ = &metrics->AddCounter("edgestate_http_auth_failures_total",
                                        "Requests refused for a missing or wrong API key.");
  cache_hits_ = &metrics->AddCounter("edgestate_cache_requests_total", "Cache reads by outcome.",
                                     "result=\"hit\"");
  cache_misses_ = &metrics->AddCounter("edgestate_cache_requests_total", "Cache reads by outcome.",
                                       "result=\"miss\"");
}

std::optional<Response> MetricsEndpoint::Handle(const Request& req,
                                                const std::function<Responder()>&) {
  RouteMatch m = MatchRoute(req.target);
  if (m.route != Route::kMetrics) {
    return Error(m.route, 404, "this listener serves only GET /metrics");
  }
  if (!MethodAllowed(m.route, req.method)) return MethodNotAllowed(m.route, req.method);
  return MetricsResponse(*metrics_);
}

std::optional<Response> Api::Handle(const Request& req, const std::function<Responder()>& defer) {
  RouteMatch m = MatchRoute(req.target);
  if (m.route == Route::kNone) return Error(Route::kNone, 404, "no such endpoint");
  if (!MethodAllowed(m.route, req.method)) return MethodNotAllowed(m.route, req.method);
  if (!options_.api_key.empty() && m.route != Route::kHealth) {
    constexpr std::string_view kBearer = "Bearer ";
    std::string_view auth = req.authorization;
    bool ok = auth.size() > kBearer.size() && auth.substr(0, kBearer.size()) == kBearer &&
              ConstantTimeEquals(options_.api_key, auth.substr(kBearer.size()));
    if (!ok) {
      auth_failures_->Inc();
      Response r = Error(m.route, 401, "missing or wrong API key");
      r.headers.emplace_back("WWW-Authenticate", "Bearer");
      return r;
    }
  }
  if (!m.error.ok()) return FromStatus(m.route, m.error);

  switch (m.route) {
    case Route::kRead:
    case Route::kIncrement:
    case Route::kCounter:
    case Route::kCounterIncrement: {
      StateOp op;
      op.route = m.route;
      op.name = m.route == Route::kRead || m.route == Route::kIncrement
                    ? std::string(kDefaultCounter)
                    : std::move(m.name);
      op.delta = 1;
      if (m.route == Route::kCounter || m.route == Route::kCounterIncrement) {
        if (Status s = service::ValidateCounterName(op.name); !s.ok()) {
          return FromStatus(m.route, s);
        }
      }
      if (m.route == Route::kCounterIncrement) {
        StatusOr<int64_t> delta = ParseIncrementBody(req.body);
        if (!delta.ok()) return FromStatus(m.route, delta.status());
        op.delta = *delta;
      }
      if (std::optional<Response> bad = ParseRequirement(req, m.route, &op.requirement)) {
        return bad;
      }
      op.write = m.route == Route::kIncrement || m.route == Route::kCounterIncrement;
      if (op.requirement.level == consistency::Level::kStrong && strong_ != nullptr) {
        Strong(std::move(op), defer());
        return std::nullopt;
      }
      return Admit(std::move(op), defer);
    }
    case Route::kKey:
    case Route::kKeyTouch:
    case Route::kKeyList:
    case Route::kCacheEntry:
    case Route::kCachePurge:
      return HandleRegister(req, std::move(m), defer);
    case Route::kHealth:
      return Health(defer);
    case Route::kCluster: {
      Response r;
      r.route = m.route;
      nlohmann::json j = nlohmann::json::parse(cluster_->ClusterJson(), nullptr, false);
      if (j.is_object()) {
        j["keyspace"] = nlohmann::json::parse(counters_->StatusJson(), nullptr, false);
        r.body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      } else {
        r.body = cluster_->ClusterJson();
      }
      return r;
    }
    case Route::kMetrics:
      return MetricsResponse(*metrics_);
    case Route::kNone:
    case Route::kCount:
      break;
  }
  return Error(m.route, 500, "unrouted request");
}

std::optional<Response> Api::ParseRequirement(const Request& req, Route route,
                                              service::Requirement* out) const {
  auto level = consistency::ParseRequested(req.target, req.consistency, options_.default_level);
  if (!level.ok()) return FromStatus(route, level.status());
  out->level = level->level;
  out->max_staleness_ms = level->max_staleness_ms;
  std::string_view token = req.session;
  if (token.empty() && options_.session_cookie) token = CookieValue(req.cookie, kCookieName);
  if (!token.empty()) {
    auto position = gate_->codec().Decode(token);
    if (!position.ok()) {
      Response r;
      r.status = 400;
      r.route = route;
      r.body = ErrorBody("bad_session_token", position.status().message());
      return r;
    }
    out->token = std::move(position).value();
  }
  return std::nullopt;
}

std::optional<Response> Api::Admit(StateOp op, const std::function<Responder()>& defer) {
  std::optional<service::Verdict> verdict = gate_->TryAdmit(op.requirement);
  if (verdict) {
    if (verdict->kind != service::Verdict::Kind::kServe) return Refusal(op.route, *verdict);
    return Run(std::move(op), defer);
  }
  Responder respond = defer();
  service::Requirement requirement = op.requirement;  // Before `op` moves into the lambda.
  gate_->Wait(std::move(requirement), [this, op = std::move(op),
                                       respond = std::move(respond)](service::Verdict v) mutable {
    if (v.kind != service::Verdict::Kind::kServe) return respond(Refusal(op.route, v));
    // Held: say for how long, beside the answer.
    Responder tagged = [respond = std::move(respond), waited = v.waited_ms](Response r) {
      r.headers.emplace_back("Edgestate-Waited-Ms", std::to_string(waited));
      respond(std::move(r));
    };
    Execute(std::move(op), std::move(tagged));
  });
  return std::nullopt;
}

std::optional<Response> Api::Run(StateOp op, const std::function<Responder()>& defer) {
  switch (op.route) {
    case Route::kRead:
    case Route::kCounter:
      return Read(op);
    case Route::kKeyList:
      return ListRegisters(op);
    case Route::kKey:
      if (!op.write) return ReadRegister(op);
      break;
    default:
      break;
  }
  Execute(std::move(op), defer());
  return std::nullopt;
}

void Api::Execute(StateOp op, Responder respond) {
  switch (op.route) {
    case Route::kRead:
    case Route::kCounter:
      return respond(Read(op));
    case Route::kIncrement:
    case Route::kCounterIncrement:
      Increment(std::move(op), std::move(respond));
      return;
    case Route::kKeyList:
      return respond(ListRegisters(op));
    default: {
      if (op.write) return WriteRegister(std::move(op), std::move(respond));
      Response r = ReadRegister(op);
      if (op.route == Route::kCacheEntry && r.status == 404 && op.only_if_cached) {
        r.status = 504;  // RFC 9111: a request that forbids fetching, answered by no entry.
        r.body = ErrorBody(ErrorCodeFor(504),
                           "not in the cache here, and the request says only-if-cached");
        return respond(std::move(r));
      }
      if (op.route == Route::kCacheEntry && r.status == 404 && origin_ != nullptr) {
        return FillFromOrigin(std::move(op), std::move(respond));
      }
      return respond(std::move(r));
    }
  }
}

std::optional<Response> Api::CheckBound(const StateOp& op,
                                        std::optional<int64_t>* staleness) const {
  // The bound is taken before the value is read, so it can only understate freshness; taken
  // after, a heartbeat in between could vouch for more than the value holds.
  *staleness = cluster_->StalenessMs();
  if (op.requirement.level == consistency::Level::kBounded &&
      (!*staleness || **staleness > *op.requirement.max_staleness_ms)) {
    // The bound grew between the gate's decision and now: never serve above M.
    service::Verdict v;
    v.kind = service::Verdict::Kind::kStalenessUnavailable;
    v.message =
        fmt::format("the staleness bound rose above {} ms", *op.requirement.max_staleness_ms);
    v.staleness_ms = *staleness;
    v.floor_ms = cluster_->StalenessFloorMs();
    return Refusal(op.route, v);
  }
  return std::nullopt;
}

Response Api::StrongUnavailable(Route route, const Status& s) const {
  service::Verdict v;
  v.kind = service::Verdict::Kind::kStrongUnavailable;
  v.message = s.message();
  return Refusal(route, v);
}

Response Api::Refusal(Route route, const service::Verdict& v) const {
  using Kind = service::Verdict::Kind;
  nlohmann::json err = {{"message", v.message}};
  unsigned status = 503;
  switch (v.kind) {
    case Kind::kStrongUnavailable:
      err["code"] = "strong_unavailable";
      break;
    case Kind::kSessionUnavailable:
      err["code"] = "session_unavailable";
      err["missing"] = v.missing;
      break;
    case Kind::kSessionLost:
      status = 409;
      err["code"] = "session_lost";
      err["lost"] = v.lost;
      break;
    case Kind::kStalenessUnavailable:
      err["code"] = "staleness_unavailable";
      err["staleness_ms"] = v.staleness_ms ? nlohmann::json(*v.staleness_ms) : nlohmann::json();
      err["floor_ms"] = v.floor_ms ? nlohmann::json(*v.floor_ms) : nlohmann::json();
      break;
    case Kind::kShuttingDown:
    case Kind::kServe:
      err["code"] = "unavailable";
      break;
  }
  Response r;
  r.status = status;
  r.route = route;
  r.body = nlohmann::json({{"error", std::move(err)}})
               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (status == 503) r.headers.emplace_back("Retry-After", "1");
  return r;
}

void Api::AddSessionToken(const std::optional<consistency::Position>& token, Response* r) const {
  consistency::Position now = gate_->NodePosition();
  std::string encoded;
  if (token) {
    encoded = gate_->codec().Encode(consistency::Merge(*token, now));
  } else {
    // Most responses carry this node's own position, which moves once per commit: each I/O
    // thread keeps the last one it encoded.
    thread_local const service::ConsistencyGate* cached_gate = nullptr;
    thread_local consistency::Position cached_position;
    thread_local std::string cached_token;
    if (cached_gate != gate_ || cached_position != now) {
      cached_gate = gate_;
      cached_position = now;
      cached_token = gate_->codec().Encode(now);
    }
    encoded = cached_token;
  }
  if (options_.session_cookie) {
    r->headers.emplace_back(
        "Set-Cookie", fmt::format("{}={}; Path=/; HttpOnly; SameSite=Lax", kCookieName, encoded));
  }
  r->headers.emplace_back(kSessionHeader, std::move(encoded));
}

Response Api::Read(const StateOp& op) const {
  const Route route = op.route;
  const std::string_view name = op.name;
  std::optional<int64_t> staleness;
  if (std::optional<Response> refused = CheckBound(op, &staleness)) return std::move(*refused);
  StatusOr<service::CounterValue> read = counters_->Read(name);
  if (!read.ok()) {  // The store could not be read (a counter not in memory yet): never a 0.
    return FromStatus(route, Status::Unavailable(read.status().message()));
  }
  const service::CounterValue& v = *read;
  Response r;
  r.route = route;
  // After the value: the token covers at least what the value reflects.
  AddSessionToken(op.requirement.token, &r);
  r.headers.emplace_back(kStalenessHeader,
                         staleness ? fmt::format_int(*staleness).str() : std::string("inf"));
  if (route == Route::kRead) {
    // The article's GET /read: the hottest response, built without parsing a format string.
    fmt::format_to(std::back_inserter(r.body),
                   FMT_COMPILE(R"({{"value":{},"region":"{}","lastUpdated":)"), v.value,
                   options_.region);
    AppendIsoOrNull(v.updated_at_ms, &r.body);
    r.body.push_back('}');
  } else {
    r.body =
        fmt::format(R"({{"name":{},"value":{},"region":"{}","updated_at":{},"staleness_ms":{}}})",
                    JsonString(name), v.value, options_.region, IsoOrNull(v.updated_at_ms),
                    staleness ? std::to_string(*staleness) : std::string("null"));
  }
  return r;
}

std::optional<Response> Api::Increment(StateOp op, Responder respond) {
  const Route route = op.route;
  std::string json_name = route == Route::kCounterIncrement ? JsonString(op.name) : std::string();
  counters_->Increment(
      std::move(op.name), op.delta,
      [this, respond = std::move(respond), route, region = std::string_view(options_.region),
       json_name = std::move(json_name),
       token = std::move(op.requirement.token)](StatusOr<service::CounterValue> result) {
        if (!result.ok()) return respond(FromStatus(route, result.status()));
        Response r;
        r.route = route;
        AddSessionToken(token, &r);
        if (route == Route::kIncrement) {
          fmt::format_to(std::back_inserter(r.body), FMT_COMPILE(R"({{"value":{},"region":"{}"}})"),
                         result->value, region);
        } else {
          r.body = fmt::format(R"({{"name":{},"value":{},"region":"{}","updated_at":{}}})",
                               json_name, result->value, region, IsoOrNull(result->updated_at_ms));
        }
        respond(std::move(r));
      });
  return std::nullopt;
}

void Api::Strong(StateOp op, Responder respond) {
  const Route route = op.route;
  const bool read = route == Route::kRead || route == Route::kCounter;
  std::string json_name = JsonString(op.name);
  strong_->Submit(
      std::move(op.name), read, op.delta,
      [this, respond = std::move(respond), route, json_name = std::move(json_name),
       token = std::move(op.requirement.token)](StatusOr<strong::StrongResult> result) {
        if (!result.ok()) {
          if (result.status().code() != StatusCode::kUnavailable) {
            return respond(FromStatus(route, result.status()));
          }
          return respond(StrongUnavailable(route, result.status()));
        }
        Response r;
        r.route = route;
        AddSessionToken(token, &r);
        r.headers.emplace_back("Edgestate-Voter", result->voter);
        switch (route) {
          case Route::kRead:
            r.body = fmt::format(R"({{"value":{},"region":"{}","lastUpdated":{}}})", result->value,
                                 options_.region, IsoOrNull(result->updated_at_ms));
            break;
          case Route::kIncrement:
            r.body = fmt::format(R"({{"value":{},"region":"{}"}})", result->value, options_.region);
            break;
          default:
            r.body = fmt::format(
                R"({{"name":{},"value":{},"region":"{}","updated_at":{},"consistency":"strong","voter":"{}"}})",
                json_name, result->value, options_.region, IsoOrNull(result->updated_at_ms),
                result->voter);
            break;
        }
        respond(std::move(r));
      });
}

std::optional<Response> Api::Health(const std::function<Responder()>& defer) {
  Responder respond = defer();
  counters_->ProbeStorage([respond = std::move(respond), region = std::string_view(options_.region),
                           dir = JsonString(options_.data_dir)](Status s) {
    Response r;
    r.route = Route::kHealth;
    if (s.ok()) {
      r.body = fmt::format(R"({{"status":"healthy","region":"{}","disk":{}}})", region, dir);
    } else {
      r.status = 503;
      r.body = fmt::format(
          R"({{"status":"unhealthy","region":"{}","disk":{},"error":{{"code":"unavailable","message":{}}}}})",
          region, dir, JsonString(s.message()));
    }
    respond(std::move(r));
  });
  return std::nullopt;
}

namespace {

// A TTL in milliseconds from the ttl_ms query parameter or the Edgestate-TTL-Ms header (they
// must agree when both are present). 0 when neither is. InvalidArgument when malformed or
// outside [kMinTtlMs, kMaxTtlMs].
StatusOr<int64_t> ParseTtl(const Request& req) {
  StatusOr<std::optional<std::string>> query = QueryParam(req.target, "ttl_ms");
  if (!query.ok()) return query.status();
  std::optional<std::string_view> text;
  if (*query) text = **query;
  if (req.has_ttl_ms) {
    if (text && *text != req.ttl_ms) {
      return Status::InvalidArgument(
          "the ttl_ms parameter and the Edgestate-TTL-Ms header disagree");
    }
    text = req.ttl_ms;
  }
  if (!text) return int64_t{0};
  int64_t ttl = 0;
  auto [p, ec] = std::from_chars(text->data(), text->data() + text->size(), ttl);
  if (text->empty() || ec != std::errc() || p != text->data() + text->size()) {
    return Status::InvalidArgument("TTL must be an integer number of milliseconds");
  }
  if (ttl < crdt::kMinTtlMs || ttl > crdt::kMaxTtlMs) {
    return Status::InvalidArgument(fmt::format("TTL {} ms is outside {}..{} ms (30 days)", ttl,
                                               crdt::kMinTtlMs, crdt::kMaxTtlMs));
  }
  return ttl;
}

// The conditions of a write from If-Match ("<etag>" or *) and If-None-Match (* only).
Status ParseConditions(const Request& req, service::RegisterWrite* w) {
  if (!req.if_match.empty()) {
    std::string_view v = req.if_match;
    if (v != "*" && (v.size() < 2 || v.front() != '"' || v.back() != '"' ||
                     v.substr(1, v.size() - 2).find('"') != std::string_view::npos)) {
      return Status::InvalidArgument("If-Match takes one quoted ETag or *");
    }
    w->if_match = std::string(v);
  }
  if (!req.if_none_match.empty()) {
    if (req.if_none_match != "*") return Status::InvalidArgument("If-None-Match takes only *");
    w->if_none_match = true;
  }
  return Status::Ok();
}

std::string RegisterJson(std::string_view key, const crdt::LwwRegister& reg, size_t size) {
  return fmt::format(R"({{"key":{},"etag":{},"expires_at":{},"size":{}}})", JsonString(key),
                     JsonString(service::ETagOf(reg)),
                     reg.expires_at_ms == 0 ? std::string("null") : IsoOrNull(reg.expires_at_ms),
                     size);
}

// Whether a Cache-Control request header has the only-if-cached directive (RFC 9111 5.2.1.7;
// directive names are case-insensitive, separated by commas).
bool OnlyIfCached(std::string_view cache_control) {
  for (size_t start = 0; start <= cache_control.size();) {
    size_t end = cache_control.find(',', start);
    if (end == std::string_view::npos) end = cache_control.size();
    std::string_view d = cache_control.substr(start, end - start);
    while (!d.empty() && (d.front() == ' ' || d.front() == '\t')) d.remove_prefix(1);
    while (!d.empty() && (d.back() == ' ' || d.back() == '\t')) d.remove_suffix(1);
    constexpr std::string_view kDirective = "only-if-cached";
    if (d.size() == kDirective.size() &&
        std::equal(d.begin(), d.end(), kDirective.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) == b;
        })) {
      return true;
    }
    start = end + 1;
  }
  return false;
}

// Fills *r with a live write: its value, content type, ETag and expiry.
void SetRegisterBody(crdt::LwwRegister reg, Response* r) {
  r->headers.emplace_back("ETag", service::ETagOf(reg));
  if (reg.expires_at_ms != 0) {
    r->headers.emplace_back("Edgestate-Expires-At", FormatIso8601Millis(reg.expires_at_ms));
  }
  r->owned_content_type =
      reg.content_type.empty() ? std::string("application/octet-stream") : reg.content_type;
  r->body = std::move(reg.value);
}

// The answer to a write of a key or cache entry, or to a purge, that was made.
Response WrittenResponse(Route route, bool purge, service::RegisterWrite::Kind kind,
                         std::string_view display, const crdt::LwwRegister& written, bool existed,
                         size_t size) {
  Response r;
  r.route = route;
  r.headers.emplace_back("ETag", service::ETagOf(written));
  if (purge) {
    r.body = fmt::format(R"({{"purged":{},"{}":true,"etag":{}}})", JsonString(display),
                         route == Route::kCachePurge ? "prefix" : "key",
                         JsonString(service::ETagOf(written)));
  } else if (kind == service::RegisterWrite::Kind::kDelete) {
    r.body =
        fmt::format(R"({{"key":{},"deleted":true,"existed":{}}})", JsonString(display), existed);
  } else {
    if (kind == service::RegisterWrite::Kind::kPut && !existed) r.status = 201;
    r.body = RegisterJson(display, written, size);
  }
  return r;
}

}  // namespace

std::optional<Response> Api::HandleRegister(const Request& req, RouteMatch m,
                                            const std::function<Responder()>& defer) {
  StateOp op;
  op.route = m.route;
  op.only_if_cached = m.route == Route::kCacheEntry && OnlyIfCached(req.cache_control);
  const bool cache = m.route == Route::kCacheEntry || m.route == Route::kCachePurge;
  op.write = req.method != "GET";
  auto fail = [&](const Status& s) { return FromStatus(m.route, s); };
  if (m.route == Route::kKeyList) {
    auto prefix = QueryParam(req.target, "prefix");
    auto after = QueryParam(req.target, "after");
    auto limit = QueryParam(req.target, "limit");
    for (const auto* p : {&prefix, &after, &limit}) {
      if (!p->ok()) return fail(p->status());
    }
    op.prefix = prefix->value_or("");
    op.after = after->value_or("");
    if (op.prefix.size() > service::kMaxKeyNameBytes ||
        op.after.size() > service::kMaxKeyNameBytes) {
      return fail(Status::InvalidArgument("prefix and after are at most 512 bytes"));
    }
    op.limit = 100;
    if (*limit) {
      const std::string& t = **limit;
      size_t n = 0;
      auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
      if (t.empty() || ec != std::errc() || p != t.data() + t.size() || n < 1 || n > 1000) {
        return fail(Status::InvalidArgument("limit must be an integer from 1 to 1000"));
      }
      op.limit = n;
    }
  } else if (m.route == Route::kCachePurge) {
    nlohmann::json j = nlohmann::json::parse(req.body, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || j.size() != 1 || !j.contains("prefix") ||
        !j["prefix"].is_string()) {
      return fail(Status::InvalidArgument(R"(the body must be {"prefix": "<string>"})"));
    }
    op.name = "*" + j["prefix"].get<std::string>();
    op.purge = true;
    if (Status s = service::ValidatePurgePattern(op.name); !s.ok()) return fail(s);
  } else {
    op.name = std::move(m.name);
    if (Status s = service::ValidateKeyName(op.name); !s.ok()) return fail(s);
    if (cache && req.method == "DELETE") {
      op.name = "=" + op.name;  // A purge of one key, in every region.
      op.purge = true;
    }
  }
  if (op.write && !op.purge) {
    service::RegisterWrite& w = op.register_write;
    if (req.method == "DELETE") {
      w.kind = service::RegisterWrite::Kind::kDelete;
    } else if (m.route == Route::kKeyTouch) {
      w.kind = service::RegisterWrite::Kind::kTouch;
    } else {
      w.value = std::string(req.body);
      if (Status s = service::ValidateContentType(req.content_type); !s.ok()) return fail(s);
      w.content_type = std::string(req.content_type);
    }
    if (w.kind != service::RegisterWrite::Kind::kDelete) {
      StatusOr<int64_t> ttl = ParseTtl(req);
      if (!ttl.ok()) return fail(ttl.status());
      w.ttl_ms = *ttl;
      if (cache && w.ttl_ms == 0) w.ttl_ms = options_.cache_default_ttl_ms;
      if (w.kind == service::RegisterWrite::Kind::kTouch && w.ttl_ms == 0) {
        return fail(Status::InvalidArgument("touch needs ttl_ms"));
      }
    }
    if (Status s = ParseConditions(req, &w); !s.ok()) return fail(s);
    if (cache) {
      if (w.if_match || w.if_none_match) {
        return fail(Status::InvalidArgument("cache writes take no conditions"));
      }
      w.fill_started = counters_->ClockNow();
    }
  }
  if (std::optional<Response> bad = ParseRequirement(req, m.route, &op.requirement)) return bad;
  if (op.requirement.level == consistency::Level::kStrong) {
    if (m.route != Route::kKey && m.route != Route::kKeyTouch) {
      auto named = QueryParam(req.target, "consistency");
      if (req.consistency.empty() && named.ok() && !*named) {
        // Only the default says strong: listings and the cache are served as local (a session
        // token still makes them session reads).
        op.requirement.level = consistency::Level::kLocal;
        return Admit(std::move(op), defer);
      }
      return fail(Status::InvalidArgument(
          "consistency=strong applies to counters and keys, not to listings or the cache "
          "(docs/keys.md); use session or bounded"));
    }
    if (strong_ != nullptr) {
      StrongRegister(std::move(op), defer());
      return std::nullopt;
    }
  }
  return Admit(std::move(op), defer);
}

Response Api::ReadRegister(const StateOp& op) const {
  std::optional<int64_t> staleness;
  if (std::optional<Response> refused = CheckBound(op, &staleness)) return std::move(*refused);
  const storage::RecordType type =
      op.route == Route::kCacheEntry ? storage::RecordType::kCacheEntry : storage::RecordType::kKey;
  StatusOr<std::optional<crdt::LwwRegister>> got = counters_->GetRegister(type, op.name);
  if (!got.ok()) return FromStatus(op.route, got.status());
  Response r;
  r.route = op.route;
  AddSessionToken(op.requirement.token, &r);
  r.headers.emplace_back(kStalenessHeader,
                         staleness ? fmt::format_int(*staleness).str() : std::string("inf"));
  const int64_t now_ms = RealClock()->NowUnixMillis();
  if (!*got || !crdt::IsLive(**got, now_ms)) {
    Response miss =
        Error(op.route, 404,
              op.route == Route::kCacheEntry ? "not in the cache here"
                                             : "no such key (or it expired or was deleted)");
    miss.headers = std::move(r.headers);
    if (op.route == Route::kCacheEntry) {
      cache_misses_->Inc();
      miss.headers.emplace_back("Edgestate-Cache", "miss");
    }
    return miss;
  }
  if (op.route == Route::kCacheEntry) {
    cache_hits_->Inc();
    r.headers.emplace_back("Edgestate-Cache", "hit");
  }
  SetRegisterBody(std::move(**got), &r);
  return r;
}

Response Api::ListRegisters(const StateOp& op) const {
  std::optional<int64_t> staleness;
  if (std::optional<Response> refused = CheckBound(op, &staleness)) return std::move(*refused);
  std::vector<service::ListedKey> keys;
  std::string next;
  Status s = counters_->ListRegisters(storage::RecordType::kKey, op.prefix, op.after, op.limit,
                                      &keys, &next);
  if (!s.ok()) return FromStatus(op.route, s);
  Response r;
  r.route = op.route;
  AddSessionToken(op.requirement.token, &r);
  r.headers.emplace_back(kStalenessHeader,
                         staleness ? fmt::format_int(*staleness).str() : std::string("inf"));
  r.body = R"({"keys":[)";
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i > 0) r.body.push_back(',');
    r.body += RegisterJson(keys[i].name, keys[i].reg, keys[i].size);
  }
  r.body += R"(],"next":)";
  r.body += next.empty() ? std::string("null") : JsonString(next);
  r.body.push_back('}');
  return r;
}

void Api::WriteRegister(StateOp op, Responder respond) {
  storage::RecordType type = storage::RecordType::kKey;
  if (op.route == Route::kCacheEntry) type = storage::RecordType::kCacheEntry;
  const bool purge = op.purge;
  if (purge) type = storage::RecordType::kPurge;
  const Route route = op.route;
  std::string display = purge ? op.name.substr(1) : op.name;
  const auto kind = op.register_write.kind;
  counters_->WriteRegister(
      type, std::move(op.name), std::move(op.register_write),
      [this, respond = std::move(respond), route, purge, kind, display = std::move(display),
       token = std::move(op.requirement.token)](StatusOr<service::RegisterResult> result) {
        if (!result.ok()) {
          if (result.status().code() == StatusCode::kFailedPrecondition) {
            return respond(Error(route, 412, result.status().message()));
          }
          return respond(FromStatus(route, result.status()));
        }
        Response r = WrittenResponse(route, purge, kind, display, result->written, result->existed,
                                     result->size);
        AddSessionToken(token, &r);
        respond(std::move(r));
      });
}

void Api::StrongRegister(StateOp op, Responder respond) {
  const Route route = op.route;
  const bool read = !op.write;
  const auto kind = op.register_write.kind;
  std::string key = op.name;
  strong_->SubmitKey(
      std::move(op.name), read, std::move(op.register_write),
      [this, respond = std::move(respond), route, read, kind, key = std::move(key),
       token = std::move(op.requirement.token)](StatusOr<strong::StrongResult> result) {
        if (!result.ok()) {
          switch (result.status().code()) {
            case StatusCode::kFailedPrecondition:
              return respond(Error(route, 412, result.status().message()));
            case StatusCode::kNotFound:
              return respond(Error(route, 404, result.status().message()));
            case StatusCode::kUnavailable:
              return respond(StrongUnavailable(route, result.status()));
            default:
              return respond(FromStatus(route, result.status()));
          }
        }
        if (!result->reg)
          return respond(Error(route, 500, "a strong key operation lost its write"));
        Response r;
        if (read) {
          r.route = route;
          r.headers.emplace_back(kStalenessHeader, "0");  // Linearizable: nothing missed.
          SetRegisterBody(std::move(*result->reg), &r);
        } else {
          r = WrittenResponse(route, /*purge=*/false, kind, key, *result->reg, result->existed,
                              result->size);
        }
        AddSessionToken(token, &r);
        r.headers.emplace_back("Edgestate-Voter", result->voter);
        respond(std::move(r));
      });
}

void Api::FillFromOrigin(StateOp op, Responder respond) {
  const crdt::Hlc started = counters_->ClockNow();  // Before the fetch: see PurgedAfter.
  std::string name = op.name;
  const bool refetch = op.refills > 0;
  origin_->Fetch(
      std::move(name), refetch,
      [this, op = std::move(op), respond = std::move(respond), started](
          const StatusOr<OriginResponse>& fetched, bool first) mutable {
        if (fetched.status().code() == StatusCode::kAborted) {
          // Held while another request's fill was stored: read the cache again (a hit, unless the
          // fill was refused or purged since, then a new fetch; a few rounds at most).
          Response again = ReadRegister(op);
          if (again.status == 404 && ++op.refills <= kMaxRefills) {
            return FillFromOrigin(std::move(op), std::move(respond));
          }
          return respond(std::move(again));
        }
        if (!fetched.ok()) {
          unsigned status = 502;
          if (fetched.status().code() == StatusCode::kNotFound) status = 404;
          if (fetched.status().code() == StatusCode::kDeadlineExceeded) status = 504;
          Response r = Error(op.route, status, "origin: " + fetched.status().message());
          r.headers.emplace_back("Edgestate-Cache", "miss");
          return respond(std::move(r));
        }
        Response r;
        r.route = op.route;
        AddSessionToken(op.requirement.token, &r);
        r.headers.emplace_back("Edgestate-Cache", "miss");
        std::string content_type = fetched->content_type;
        if (content_type.empty() || !service::ValidateContentType(content_type).ok()) {
          content_type = "application/octet-stream";
        }
        r.owned_content_type = content_type;
        r.body = fetched->body;
        CachePolicy policy = PolicyFor(fetched->cache_control, options_.cache_default_ttl_ms);
        if (!first) return respond(std::move(r));
        if (!policy.store) {
          origin_->Release(fetched->flight, /*stored=*/false);
          return respond(std::move(r));
        }
        service::RegisterWrite fill;
        fill.value = fetched->body;
        fill.content_type = std::move(content_type);
        fill.ttl_ms = policy.ttl_ms;
        fill.fill_started = started;
        // Answered once stored (or refused: a purge since the fetch began), so a read after this
        // answer hits.
        std::string name = op.name;
        counters_->WriteRegister(
            storage::RecordType::kCacheEntry, std::move(name), std::move(fill),
            [this, flight = fetched->flight, respond = std::move(respond),
             r = std::move(r)](StatusOr<service::RegisterResult> stored) mutable {
              origin_->Release(flight, stored.ok());
              if (stored.ok()) {
                r.headers.emplace_back("ETag", service::ETagOf(stored->written));
                r.headers.emplace_back("Edgestate-Expires-At",
                                       FormatIso8601Millis(stored->written.expires_at_ms));
              }
              respond(std::move(r));
            });
      });
}

}  // namespace edgestate::http
