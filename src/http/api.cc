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

Api::Api(ApiOptions options, service::CounterService* counters, const service::ClusterView* cluster,
         MetricsRegistry* metrics)
    : options_(std::move(options)), counters_(counters), cluster_(cluster), metrics_(metrics) {
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
      return Read(m.route, kDefaultCounter);
    case Route::kIncrement:
      return Increment(m.route, std::string(kDefaultCounter), 1, defer);
    case Route::kCounter:
    case Route::kCounterIncrement: {
      if (Status s = service::ValidateCounterName(m.name); !s.ok()) return FromStatus(m.route, s);
      if (m.route == Route::kCounter) return Read(m.route, m.name);
      StatusOr<int64_t> delta = ParseIncrementBody(req.body);
      if (!delta.ok()) return FromStatus(m.route, delta.status());
      return Increment(m.route, std::move(m.name), *delta, defer);
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

Response Api::Read(Route route, std::string_view name) const {
  // The bound is taken before the value is read, so it can only understate freshness; taken
  // after, a heartbeat in between could vouch for more than the value holds.
  std::optional<int64_t> staleness = cluster_->StalenessMs();
  service::CounterValue v = counters_->Read(name);
  Response r;
  r.route = route;
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

std::optional<Response> Api::Increment(Route route, std::string name, int64_t delta,
                                       const std::function<Responder()>& defer) {
  Responder respond = defer();
  std::string json_name = route == Route::kCounterIncrement ? JsonString(name) : std::string();
  counters_->Increment(
      std::move(name), delta,
      [respond = std::move(respond), route, region = std::string_view(options_.region),
       json_name = std::move(json_name)](StatusOr<service::CounterValue> result) {
        if (!result.ok()) return respond(FromStatus(route, result.status()));
        Response r;
        r.route = route;
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
