#include "http/api.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/test_dir.h"

namespace edgestate::http {
namespace {

TEST(ParseIncrementBodyTest, Accepts) {
  EXPECT_EQ(*ParseIncrementBody(""), 1);
  EXPECT_EQ(*ParseIncrementBody(" \r\n"), 1);
  EXPECT_EQ(*ParseIncrementBody("{}"), 1);
  EXPECT_EQ(*ParseIncrementBody(R"({"delta": 5})"), 5);
  EXPECT_EQ(*ParseIncrementBody(R"({"delta": -5})"), -5);
  EXPECT_EQ(*ParseIncrementBody(R"({"delta": 9223372036854775807})"), INT64_MAX);
  EXPECT_EQ(*ParseIncrementBody(R"({"delta": -9223372036854775808})"), INT64_MIN);
}

TEST(ParseIncrementBodyTest, Rejects) {
  for (const char* bad : {"{", "[]", "5", "null", R"({"delta": 1.5})", R"({"delta": "5"})",
                          R"({"delta": true})", R"({"delta": null})",
                          R"({"delta": 9223372036854775808})", R"({"delta": -9223372036854775809})",
                          R"({"delta": 1e3})", R"({"detla": 1})", R"({"delta": 1} x)", "\xff"}) {
    StatusOr<int64_t> r = ParseIncrementBody(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    }
  }
}

TEST(ParseIncrementBodyTest, DeepNestingDoesNotCrash) {
  std::string deep(60000, '[');
  EXPECT_FALSE(ParseIncrementBody(deep).ok());
  std::string deep_obj;
  for (int i = 0; i < 20000; ++i) deep_obj += R"({"a":)";
  EXPECT_FALSE(ParseIncrementBody(deep_obj).ok());
}

class FakeCluster : public service::ClusterView {
 public:
  std::optional<int64_t> StalenessMs() const override {
    std::lock_guard lock(mu);
    return staleness;
  }
  std::optional<int64_t> StalenessFloorMs() const override { return floor; }
  void SetStaleness(std::optional<int64_t> ms) {
    std::lock_guard lock(mu);
    staleness = ms;
  }
  void Pull(const std::vector<std::string>& regions) override {
    std::lock_guard lock(mu);
    pulls.push_back(regions.empty() ? "*" : regions.front());
  }
  // Waits until some request asked for a pull; returns the first region pulled ("*": all).
  std::string WaitForPull() {
    for (int i = 0; i < 60'000; ++i) {
      {
        std::lock_guard lock(mu);
        if (!pulls.empty()) return pulls.front();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return "(no pull)";
  }
  void SetProgressListener(std::function<void()> l) override { listener = std::move(l); }
  std::string ClusterJson() const override { return R"({"region":"iad","peers":[]})"; }
  // A heartbeat arrived: the bound is now `ms`.
  void Heartbeat(int64_t ms) {
    SetStaleness(ms);
    listener();
  }
  std::optional<int64_t> floor = 0;
  std::function<void()> listener;
  mutable std::mutex mu;
  std::optional<int64_t> staleness = 0;  // GUARDED_BY(mu)
  std::vector<std::string> pulls;        // GUARDED_BY(mu)
};

// Extra request headers.
struct Headers {
  std::string_view consistency = {};
  std::string_view session = {};
  std::string_view cookie = {};
};

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(""); }
  void TearDown() override {
    api_.reset();
    if (svc_) svc_->Stop();  // No commit may call the gate's listener once the gate is gone.
    gate_.reset();
    svc_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // `wait`: how long the gate holds a request. Long by default, so that a test of a wait that
  // ends well does not depend on how busy the machine is; short where a test waits it out.
  void Open(const std::string& key, ApiOptions options = {},
            std::chrono::milliseconds wait = std::chrono::seconds(60)) {
    dir_ = FreshTestDir();
    store_ = std::move(storage::Store::Open(dir_.string())).value();
    service::KeyspaceOptions o;
    o.region = "iad";
    svc_ = std::move(service::Keyspace::Open(store_.get(), o, &metrics_)).value();
    svc_->StartLoading();
    service::ConsistencyGateOptions g;
    g.region = "iad";
    g.session_wait = wait;
    gate_ =
        std::make_unique<service::ConsistencyGate>(g, svc_.get(), &cluster_, &codec_, &metrics_);
    options.region = "iad";
    options.api_key = key;
    options.data_dir = dir_.string();
    api_ = std::make_unique<Api>(options, svc_.get(), &cluster_, gate_.get(), &metrics_);
  }

  static std::string Header(const Response& r, std::string_view name) {
    for (const auto& [k, v] : r.headers) {
      if (k == name) return v;
    }
    return "(none)";
  }

  // The session token a response carries, decoded.
  consistency::Position Token(const Response& r) {
    auto p = codec_.Decode(Header(r, "Edgestate-Session"));
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    return p.ok() ? *p : consistency::Position{};
  }

  // lhr's writes up to `seq` of its life `epoch`, applied here.
  void ApplyLhr(uint32_t epoch, uint64_t seq) {
    std::promise<Status> done;
    svc_->ApplyRemote("lhr", epoch, seq,
                      {service::SlotUpdate{"default", crdt::Slot{seq, 0, seq, 1}}},
                      [&](Status s) { done.set_value(s); });
    ASSERT_TRUE(done.get_future().get().ok());
  }

  Response Call(std::string_view method, std::string_view target, std::string_view body = "",
                std::string_view auth = "", Headers h = {}) {
    std::promise<Response> deferred;
    bool was_deferred = false;
    std::function<Responder()> defer = [&] {
      was_deferred = true;
      return Responder([&](Response r) { deferred.set_value(std::move(r)); });
    };
    std::optional<Response> r = api_->Handle(
        Request{method, target, body, auth, h.consistency, h.session, h.cookie}, defer);
    if (r) {
      EXPECT_FALSE(was_deferred);
      return *r;
    }
    EXPECT_TRUE(was_deferred);
    return deferred.get_future().get();
  }

  static nlohmann::json Json(const Response& r) { return nlohmann::json::parse(r.body); }

  static void ExpectError(const Response& r, unsigned status, const std::string& code) {
    EXPECT_EQ(r.status, status) << r.body;
    nlohmann::json j = nlohmann::json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.body;
    EXPECT_EQ(j["error"]["code"], code) << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string()) << r.body;
  }

  std::filesystem::path dir_;
  FakeCluster cluster_;
  consistency::SessionCodec codec_{{"iad", "lhr"}, "test-secret"};  // lhr: index 1.
  MetricsRegistry metrics_;
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<service::Keyspace> svc_;
  std::unique_ptr<service::ConsistencyGate> gate_;
  std::unique_ptr<Api> api_;
};

TEST_F(ApiTest, ArticleEndpoints) {
  Response r = Call("GET", "/read");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(Json(r), nlohmann::json::parse(R"({"value":0,"region":"iad","lastUpdated":null})"));
  r = Call("POST", "/increment");
  EXPECT_EQ(Json(r), nlohmann::json::parse(R"({"value":1,"region":"iad"})"));
  r = Call("POST", "/increment", "{}");
  EXPECT_EQ(Json(r)["value"], 2);
  r = Call("GET", "/read");
  EXPECT_EQ(Json(r)["value"], 2);
  EXPECT_TRUE(Json(r)["lastUpdated"].is_string());
  EXPECT_EQ(Json(r)["lastUpdated"].get<std::string>().size(), 24u);  // ISO 8601 with ms.
}

TEST_F(ApiTest, VersionedCounters) {
  Response r = Call("POST", "/v1/counters/page%2Fhome/increment", R"({"delta": 41})");
  EXPECT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(Json(r)["value"], 41);
  EXPECT_EQ(Json(r)["name"], "page/home");
  r = Call("POST", "/v1/counters/page%2Fhome/increment");
  EXPECT_EQ(Json(r)["value"], 42);
  r = Call("GET", "/v1/counters/page%2Fhome");
  nlohmann::json j = Json(r);
  EXPECT_EQ(j["name"], "page/home");
  EXPECT_EQ(j["value"], 42);
  EXPECT_EQ(j["region"], "iad");
  EXPECT_EQ(j["staleness_ms"], 0);
  EXPECT_TRUE(j["updated_at"].is_string());
  EXPECT_EQ(Header(r, "Edgestate-Staleness-Ms"), "0");
}

TEST_F(ApiTest, StalenessComesFromTheClusterView) {
  cluster_.SetStaleness(42);
  Response r = Call("GET", "/v1/counters/a");
  EXPECT_EQ(Json(r)["staleness_ms"], 42);
  EXPECT_EQ(Header(r, "Edgestate-Staleness-Ms"), "42");
  cluster_.SetStaleness(std::nullopt);  // A peer never heard from.
  r = Call("GET", "/v1/counters/a");
  EXPECT_TRUE(Json(r)["staleness_ms"].is_null());
  EXPECT_EQ(Header(r, "Edgestate-Staleness-Ms"), "inf");
  r = Call("GET", "/read");
  EXPECT_EQ(Header(r, "Edgestate-Staleness-Ms"), "inf");
  EXPECT_EQ(Json(Call("GET", "/v1/cluster"))["region"], "iad");
}

TEST_F(ApiTest, BadInput) {
  ExpectError(Call("GET", "/nope"), 404, "not_found");
  Response r = Call("GET", "/increment");
  ExpectError(r, 405, "method_not_allowed");
  EXPECT_EQ(Header(r, "Allow"), "POST");
  ExpectError(Call("DELETE", "/read"), 405, "method_not_allowed");
  ExpectError(Call("POST", "/v1/counters/a/increment", "{bad"), 400, "bad_request");
  ExpectError(Call("POST", "/v1/counters/a/increment", R"({"delta":1.5})"), 400, "bad_request");
  ExpectError(Call("GET", "/v1/counters/" + std::string(257, 'a')), 400, "bad_request");
  ExpectError(Call("GET", "/v1/counters/a%0Ab"), 400, "bad_request");
  ExpectError(Call("GET", "/v1/counters/a%zz"), 400, "bad_request");
  ExpectError(Call("GET", "/v1/counters/"), 400, "bad_request");
  ExpectError(Call("GET", "/v1/counters/%FF"), 400, "bad_request");
}

TEST_F(ApiTest, OverflowIs409AndChangesNothing) {
  ASSERT_EQ(Call("POST", "/v1/counters/o/increment", R"({"delta":9223372036854775807})").status,
            200u);
  ExpectError(Call("POST", "/v1/counters/o/increment", R"({"delta":1})"), 409, "conflict");
  EXPECT_EQ(Json(Call("GET", "/v1/counters/o"))["value"], INT64_MAX);
}

TEST_F(ApiTest, ApiKey) {
  TearDown();
  Open("s3cret");
  ExpectError(Call("GET", "/read"), 401, "unauthorized");
  ExpectError(Call("GET", "/read", "", "Bearer wrong"), 401, "unauthorized");
  ExpectError(Call("GET", "/read", "", "Bearer s3cre"), 401, "unauthorized");
  ExpectError(Call("GET", "/read", "", "s3cret"), 401, "unauthorized");
  ExpectError(Call("GET", "/metrics"), 401, "unauthorized");
  EXPECT_EQ(Call("GET", "/read", "", "Bearer s3cret").status, 200u);
  EXPECT_EQ(Call("POST", "/increment", "", "Bearer s3cret").status, 200u);
  EXPECT_EQ(Call("GET", "/health").status, 200u);  // Open without a key.
}

TEST_F(ApiTest, TheMetricsEndpointServesOnlyMetricsWithoutTheKey) {
  TearDown();
  Open("s3cret");
  MetricsEndpoint endpoint(&metrics_);
  auto call = [&](std::string_view method, std::string_view target) {
    Request req;
    req.method = method;
    req.target = target;
    std::optional<Response> r = endpoint.Handle(req, [] { return Responder(); });
    EXPECT_TRUE(r.has_value());
    return r.value_or(Response{});
  };
  Response r = call("GET", "/metrics");
  EXPECT_EQ(r.status, 200u);
  EXPECT_NE(r.body.find("edgestate_"), std::string::npos);
  for (std::string_view path : {"/read", "/v1/counters/a", "/health", "/v1/cluster", "/nope"}) {
    ExpectError(call("GET", path), 404, "not_found");
  }
  ExpectError(call("POST", "/increment"), 404, "not_found");
  ExpectError(call("POST", "/metrics"), 405, "method_not_allowed");
}

TEST_F(ApiTest, HealthAndMetrics) {
  Response r = Call("GET", "/health");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(Json(r)["status"], "healthy");
  EXPECT_EQ(Json(r)["region"], "iad");
  Call("POST", "/increment");
  r = Call("GET", "/metrics");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.content_type, "text/plain; version=0.0.4");
  EXPECT_NE(r.body.find("edgestate_counters 1"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("edgestate_commit_batch_size_bucket"), std::string::npos);
}

TEST_F(ApiTest, EveryStateResponseCarriesTheSessionsPosition) {
  Response r = Call("POST", "/increment");
  consistency::Position t = Token(r);
  ASSERT_EQ(t.size(), 1u);  // Only regions with a write seen are named.
  EXPECT_EQ(consistency::At(t, "iad"), (consistency::OriginPosition{svc_->epoch(), 1}));  // Own.
  EXPECT_EQ(consistency::At(t, "lhr"), (consistency::OriginPosition{}));  // Nothing of lhr.
  ApplyLhr(77, 4);
  for (const char* target : {"/read", "/v1/counters/x"}) {
    r = Call("GET", target);
    EXPECT_EQ(consistency::At(Token(r), "lhr"), (consistency::OriginPosition{77, 4})) << target;
  }
  r = Call("POST", "/v1/counters/x/increment");
  EXPECT_EQ(consistency::At(Token(r), "iad").seq, 2u);
  // The token returned merges the one sent: a session keeps what it saw elsewhere.
  consistency::Position elsewhere = {{"iad", {svc_->epoch(), 1}}, {"lhr", {77, 3}}};
  r = Call("GET", "/read", "", "", {.session = codec_.Encode(elsewhere)});
  EXPECT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(Token(r), (consistency::Position{{"iad", {svc_->epoch(), 2}}, {"lhr", {77, 4}}}));
  // Health, metrics and cluster are not state: no token.
  EXPECT_EQ(Header(Call("GET", "/v1/cluster"), "Edgestate-Session"), "(none)");
}

TEST_F(ApiTest, LevelsAreParsedAndStrongIsUnavailableForNow) {
  Response r = Call("GET", "/read?consistency=strong");
  ExpectError(r, 503, "strong_unavailable");
  EXPECT_EQ(Header(r, "Retry-After"), "1");
  ExpectError(Call("POST", "/increment", "", "", {.consistency = "strong"}), 503,
              "strong_unavailable");
  EXPECT_EQ(Json(Call("GET", "/read"))["value"], 0);  // The refused write changed nothing.
  r = Call("GET", "/read?consistency=eventual");
  ExpectError(r, 400, "bad_request");
  EXPECT_NE(r.body.find("local, bounded, session or strong"), std::string::npos);
  ExpectError(Call("GET", "/read?consistency=bounded"), 400, "bad_request");
  ExpectError(Call("GET", "/read?consistency=bounded&max_staleness_ms=x"), 400, "bad_request");
  ExpectError(Call("GET", "/read?consistency=local", "", "", {.consistency = "session"}), 400,
              "bad_request");
  EXPECT_EQ(Call("GET", "/read?consistency=local").status, 200u);
  EXPECT_EQ(Call("GET", "/read?consistency=session").status,
            200u);  // No token: nothing to wait for.
}

TEST_F(ApiTest, BadSessionTokensAre400NeverAWait) {
  std::string good = codec_.Encode({{"lhr", {77, 9}}});
  std::string forged = good;
  forged[forged.size() / 2] = forged[forged.size() / 2] == 'A' ? 'B' : 'A';
  consistency::SessionCodec foreign({"iad", "lhr"}, "another-cluster");
  for (const std::string& bad :
       {forged, good.substr(0, good.size() - 3), foreign.Encode({{"iad", {1, 1}}, {"lhr", {1, 1}}}),
        std::string("%%%"), std::string(5000, 'A')}) {
    auto start = std::chrono::steady_clock::now();
    ExpectError(Call("GET", "/read", "", "", {.session = bad}), 400, "bad_session_token");
    ExpectError(Call("POST", "/increment", "", "", {.session = bad}), 400, "bad_session_token");
    // Refused at once: a wait would last the gate's 60 s.
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  }
  EXPECT_EQ(Json(Call("GET", "/read"))["value"], 0);
}

TEST_F(ApiTest, ASessionWaitsForWhatItSawThenIsServed) {
  consistency::Position saw = {{"lhr", {77, 5}}};
  std::string token = codec_.Encode(saw);
  // The node has nothing of lhr: the read is held, lhr is asked to ship, and the read is answered
  // once lhr's writes up to 5 are applied.
  std::string pulled;
  std::thread applier([&] {
    pulled = cluster_.WaitForPull();
    ApplyLhr(77, 5);
  });
  Response r = Call("GET", "/read", "", "", {.session = token});
  applier.join();
  EXPECT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(Json(r)["value"], 5);  // Read-your-writes: the value holds what the session saw.
  EXPECT_EQ(pulled, "lhr");
}

TEST_F(ApiTest, ASessionThatCannotBeServedGets503NamingTheRegionsNever404OrStale) {
  TearDown();
  Open("", {}, std::chrono::milliseconds(500));
  ApplyLhr(77, 2);
  std::string token = codec_.Encode({{"lhr", {77, 5}}});
  auto start = std::chrono::steady_clock::now();
  Response r = Call("GET", "/v1/counters/default", "", "", {.session = token});
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(450));
  ExpectError(r, 503, "session_unavailable");
  EXPECT_EQ(Json(r)["error"]["missing"], nlohmann::json::array({"lhr"}));
  EXPECT_EQ(Header(r, "Retry-After"), "1");
  // A write carrying the token waits too (its returned value must include what the session saw),
  // and is refused without being applied.
  ExpectError(Call("POST", "/increment", "", "", {.session = token}), 503, "session_unavailable");
  EXPECT_EQ(svc_->CommittedSeq(), 0u);
}

TEST_F(ApiTest, ASessionFromALostLifeOfARegionIs409) {
  ApplyLhr(78, 1);  // lhr's data directory was recreated (epoch 77 -> 78).
  Response r = Call("GET", "/read", "", "", {.session = codec_.Encode({{"lhr", {77, 5}}})});
  ExpectError(r, 409, "session_lost");
  EXPECT_EQ(Json(r)["error"]["lost"], nlohmann::json::array({"lhr"}));
}

TEST_F(ApiTest, BoundedServesWithinMWaitsOrRefusesAtOnce) {
  cluster_.SetStaleness(42);
  cluster_.floor = 20;
  Response r = Call("GET", "/v1/counters/b?consistency=bounded&max_staleness_ms=100");
  EXPECT_EQ(r.status, 200u) << r.body;
  EXPECT_LE(Json(r)["staleness_ms"].get<int64_t>(), 100);
  // Below the floor: refused at once, with the bound and the floor.
  auto start = std::chrono::steady_clock::now();
  r = Call("GET", "/v1/counters/b?consistency=bounded&max_staleness_ms=10");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));  // Not held.
  ExpectError(r, 503, "staleness_unavailable");
  EXPECT_EQ(Json(r)["error"]["staleness_ms"], 42);
  EXPECT_EQ(Json(r)["error"]["floor_ms"], 20);
  // Reachable: held until a heartbeat brings the bound within M; every peer is pulled.
  std::string pulled;
  std::thread heartbeat([&] {
    pulled = cluster_.WaitForPull();
    cluster_.Heartbeat(25);
  });
  r = Call("GET", "/v1/counters/b", "", "", {.consistency = "bounded; max_staleness_ms=30"});
  heartbeat.join();
  EXPECT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(Json(r)["staleness_ms"], 25);
  EXPECT_EQ(pulled, "*");
  // Not reached within the wait: 503, never a response carrying a bound above M.
  TearDown();
  Open("", {}, std::chrono::milliseconds(300));
  cluster_.SetStaleness(90);
  r = Call("GET", "/v1/counters/b?consistency=bounded&max_staleness_ms=50");
  ExpectError(r, 503, "staleness_unavailable");
  EXPECT_EQ(Json(r)["error"]["staleness_ms"], 90);
  // A peer never heard from: no bound at all.
  cluster_.SetStaleness(std::nullopt);
  cluster_.floor = std::nullopt;
  ExpectError(Call("GET", "/read?consistency=bounded&max_staleness_ms=86400000"), 503,
              "staleness_unavailable");
}

TEST_F(ApiTest, DefaultLevelAndSessionCookie) {
  TearDown();
  ApiOptions o;
  o.default_level = consistency::Level::kStrong;
  o.session_cookie = true;
  Open("", o, std::chrono::milliseconds(300));
  ExpectError(Call("GET", "/read"), 503, "strong_unavailable");  // The article's client, unchanged.
  Response r = Call("POST", "/increment?consistency=local");
  ASSERT_EQ(r.status, 200u);
  std::string cookie = Header(r, "Set-Cookie");
  EXPECT_EQ(cookie.rfind("edgestate_session=" + Header(r, "Edgestate-Session") + ";", 0), 0u)
      << cookie;
  EXPECT_NE(cookie.find("HttpOnly"), std::string::npos);
  EXPECT_NE(cookie.find("SameSite=Lax"), std::string::npos);
  // The token comes back as a cookie; a session that saw more of lhr than this node has waits.
  std::string ahead = codec_.Encode({{"iad", {svc_->epoch(), 1}}, {"lhr", {77, 1}}});
  r = Call("GET", "/read?consistency=local", "", "",
           {.cookie = "theme=dark; edgestate_session=" + ahead + "; x=1"});
  ExpectError(r, 503, "session_unavailable");
  ExpectError(Call("GET", "/read?consistency=local", "", "", {.cookie = "edgestate_session=zz"}),
              400, "bad_session_token");
}

}  // namespace
}  // namespace edgestate::http
