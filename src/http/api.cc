#include "http/api.h"

#include <fmt/compile.h>
#include <fmt/format.h>

#include <iterator>
#include <nlohmann/json.hpp>

#include "common/strings.h"
#include "http/errors.h"

namespace edgestate::http {
namespace {

Response Error(Route route, unsigned status, std::string_view message) {
  Response r;
  r.status = status;
  r.route = route;
  r.body = ErrorBody(ErrorCodeFor(status), message);
  return r;
}

Response FromStatus(Route route, const Status& s) {
  return Error(route, HttpStatusFor(s.code()), s.message());
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
         service::ConsistencyGate* gate, MetricsRegistry* metrics, strong::StrongService* strong)
    : options_(std::move(options)),
      counters_(counters),
      cluster_(cluster),
      gate_(gate),
      metrics_(metrics),
      strong_(strong) {
  auth_failures_ = &metrics->AddCounter("edgestate_http_auth_failures_total",
                                        "Requests refused for a missing or wrong API key.");
}

std::optional<Response> Api::Handle(const Request& req, const std::function<Responder()>& defer) {
  RouteMatch m = MatchRoute(req.target);
  if (m.route == Route::kNone) return Error(Route::kNone, 404, "no such endpoint");
  if (req.method != AllowedMethods(m.route)) {
    Response r = Error(m.route, 405,
                       fmt::format("{} does not allow {}; use {}", RouteLabel(m.route), req.method,
                                   AllowedMethods(m.route)));
    r.headers.emplace_back("Allow", std::string(AllowedMethods(m.route)));
    return r;
  }
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
      auto level = consistency::ParseRequested(req.target, req.consistency, options_.default_level);
      if (!level.ok()) return FromStatus(m.route, level.status());
      op.requirement.level = level->level;
      op.requirement.max_staleness_ms = level->max_staleness_ms;
      std::string_view token = req.session;
      if (token.empty() && options_.session_cookie) token = CookieValue(req.cookie, kCookieName);
      if (!token.empty()) {
        auto position = gate_->codec().Decode(token);
        if (!position.ok()) {
          Response r;
          r.status = 400;
          r.route = m.route;
          r.body = ErrorBody("bad_session_token", position.status().message());
          return r;
        }
        op.requirement.token = std::move(position).value();
      }
      if (op.requirement.level == consistency::Level::kStrong && strong_ != nullptr) {
        Strong(std::move(op), defer());
        return std::nullopt;
      }
      std::optional<service::Verdict> verdict = gate_->TryAdmit(op.requirement);
      if (verdict) {
        if (verdict->kind != service::Verdict::Kind::kServe) return Refusal(m.route, *verdict);
        return Run(std::move(op), defer);
      }
      Responder respond = defer();
      service::Requirement requirement = op.requirement;  // Before `op` moves into the lambda.
      gate_->Wait(std::move(requirement), [this, op = std::move(op), respond = std::move(respond)](
                                              service::Verdict v) mutable {
        if (v.kind != service::Verdict::Kind::kServe) return respond(Refusal(op.route, v));
        // Held: say for how long, beside the answer.
        Responder tagged = [respond = std::move(respond), waited = v.waited_ms](Response r) {
          r.headers.emplace_back("Edgestate-Waited-Ms", std::to_string(waited));
          respond(std::move(r));
        };
        if (op.route == Route::kRead || op.route == Route::kCounter) return tagged(Read(op));
        Increment(std::move(op), std::move(tagged));
      });
      return std::nullopt;
    }
    case Route::kHealth:
      return Health(defer);
    case Route::kCluster: {
      Response r;
      r.route = m.route;
      r.body = cluster_->ClusterJson();
      return r;
    }
    case Route::kMetrics: {
      Response r;
      r.route = m.route;
      r.content_type = "text/plain; version=0.0.4";
      r.body = metrics_->Render();
      return r;
    }
    case Route::kNone:
    case Route::kCount:
      break;
  }
  return Error(m.route, 500, "unrouted request");
}

std::optional<Response> Api::Run(StateOp op, const std::function<Responder()>& defer) {
  if (op.route == Route::kRead || op.route == Route::kCounter) return Read(op);
  return Increment(std::move(op), defer());
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
  // The bound is taken before the value is read, so it can only understate freshness; taken
  // after, a heartbeat in between could vouch for more than the value holds.
  std::optional<int64_t> staleness = cluster_->StalenessMs();
  if (op.requirement.level == consistency::Level::kBounded &&
      (!staleness || *staleness > *op.requirement.max_staleness_ms)) {
    // The bound grew between the gate's decision and now: never serve above M.
    service::Verdict v;
    v.kind = service::Verdict::Kind::kStalenessUnavailable;
    v.message =
        fmt::format("the staleness bound rose above {} ms", *op.requirement.max_staleness_ms);
    v.staleness_ms = staleness;
    v.floor_ms = cluster_->StalenessFloorMs();
    return Refusal(route, v);
  }
  service::CounterValue v = counters_->Read(name);
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
          service::Verdict v;
          v.kind = service::Verdict::Kind::kStrongUnavailable;
          v.message = result.status().message();
          return respond(Refusal(route, v));
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

}  // namespace edgestate::http
