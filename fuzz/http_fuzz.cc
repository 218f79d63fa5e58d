// Raw bytes from a client, through Beast's parser with the server's limits, the request mapping,
// the router and the API of a real (in-process) node, and the response serializer: one input
// may hold several pipelined requests. Checks: nothing crashes or hangs (a deferred answer comes
// within 10 s), and every error response is a JSON body {"error": {"code", "message"}}.
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "fuzz_world.h"
#include "http/server.h"
#include "http/wire.h"

namespace bhttp = boost::beast::http;

namespace {

const edgestate::http::HttpServerOptions kLimits;  // The server's default limits.

void CheckErrorBody(const edgestate::http::Response& r) {
  if (r.status < 400) return;
  nlohmann::json j = nlohmann::json::parse(r.body, nullptr, false);
  if (!j.is_object() || !j.contains("error") || !j["error"].is_object() ||
      !j["error"].contains("code") || !j["error"]["code"].is_string() ||
      !j["error"].contains("message") || !j["error"]["message"].is_string()) {
    std::fprintf(stderr, "status %u without a JSON error body: %s\n", r.status, r.body.c_str());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  edgestate::fuzz::World& w = edgestate::fuzz::GetWorld();
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string out;
  for (int requests = 0; !in.empty() && requests < 16; ++requests) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.eager(true);
    parser.header_limit(static_cast<std::uint32_t>(kLimits.max_header_bytes));
    parser.body_limit(kLimits.max_body_bytes);
    boost::beast::error_code ec;
    while (!in.empty() && !parser.is_done()) {
      size_t used = parser.put(boost::asio::buffer(in.data(), in.size()), ec);
      in.remove_prefix(used);
      if (ec == bhttp::error::need_more) {
        ec = {};
        if (used == 0) break;
        continue;
      }
      if (ec || used == 0) break;
    }
    if (ec || !parser.is_done()) return 0;  // The server answers 400/413/431 or waits.
    std::promise<edgestate::http::Response> deferred;
    std::function<edgestate::http::Responder()> defer = [&] {
      return edgestate::http::Responder(
          [&](edgestate::http::Response r) { deferred.set_value(std::move(r)); });
    };
    std::optional<edgestate::http::Response> r =
        w.api->Handle(edgestate::http::RequestFrom(parser.get()), defer);
    if (!r) {
      auto f = deferred.get_future();
      if (f.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
        std::fprintf(stderr, "a deferred request got no answer within 10 s\n");
        std::abort();
      }
      r = f.get();
    }
    CheckErrorBody(*r);
    edgestate::http::SerializeResponse(*r, parser.get().version(), true, "", &out);
  }
  return 0;
}
