#include "http/api.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>

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
  std::optional<int64_t> StalenessMs() const override { return staleness; }
  std::string ClusterJson() const override { return R"({"region":"iad","peers":[]})"; }
  std::optional<int64_t> staleness = 0;
};

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(""); }
  void TearDown() override {
    api_.reset();
    svc_.reset();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Open(const std::string& key) {
    dir_ = FreshTestDir();
    store_ = std::move(storage::Store::Open(dir_.string())).value();
    service::CounterServiceOptions o;
    o.region = "iad";
    svc_ = std::move(service::CounterService::Open(store_.get(), o, &metrics_)).value();
    api_ = std::make_unique<Api>(ApiOptions{"iad", key, dir_.string()}, svc_.get(), &cluster_,
                                 &metrics_);
  }

  Response Call(std::string_view method, std::string_view target, std::string_view body = "",
                std::string_view auth = "") {
    std::promise<Response> deferred;
    bool was_deferred = false;
    std::function<Responder()> defer = [&] {
      was_deferred = true;
      return Responder([&](Response r) { deferred.set_value(std::move(r)); });
    };
    std::optional<Response> r = api_->Handle(Request{method, target, body, auth}, defer);
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
  MetricsRegistry metrics_;
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<service::CounterService> svc_;
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
  ASSERT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(r.headers[0].first, "Edgestate-Staleness-Ms");
}

TEST_F(ApiTest, StalenessComesFromTheClusterView) {
  cluster_.staleness = 42;
  Response r = Call("GET", "/v1/counters/a");
  EXPECT_EQ(Json(r)["staleness_ms"], 42);
  EXPECT_EQ(r.headers[0].second, "42");
  cluster_.staleness.reset();  // A peer never heard from.
  r = Call("GET", "/v1/counters/a");
  EXPECT_TRUE(Json(r)["staleness_ms"].is_null());
  EXPECT_EQ(r.headers[0].second, "inf");
  r = Call("GET", "/read");
  EXPECT_EQ(r.headers[0].second, "inf");
  EXPECT_EQ(Json(Call("GET", "/v1/cluster"))["region"], "iad");
}

TEST_F(ApiTest, BadInput) {
  ExpectError(Call("GET", "/nope"), 404, "not_found");
  Response r = Call("GET", "/increment");
  ExpectError(r, 405, "method_not_allowed");
  ASSERT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(r.headers[0].first, "Allow");
  EXPECT_EQ(r.headers[0].second, "POST");
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

}  // namespace
}  // namespace edgestate::http
