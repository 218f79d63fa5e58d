#include "bench/client.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <nlohmann/json.hpp>
#include <utility>

namespace edgestate::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::redirect_error;
using asio::use_awaitable;
using boost::system::error_code;
using tcp = asio::ip::tcp;

int64_t HeaderInt(const bhttp::response<bhttp::string_body>& res, std::string_view name) {
  auto it = res.find(name);
  if (it == res.end()) return -1;
  std::string_view v = it->value();
  int64_t n = -1;
  auto [p, e] = std::from_chars(v.data(), v.data() + v.size(), n);
  return e == std::errc() && p == v.data() + v.size() ? n : -1;
}

std::string Header(const bhttp::response<bhttp::string_body>& res, std::string_view name) {
  auto it = res.find(name);
  return it == res.end() ? std::string() : std::string(it->value());
}

}  // namespace

std::string ErrorCode(std::string_view body) {
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return {};
  auto e = j.find("error");
  if (e == j.end() || !e->is_object()) return {};
  auto c = e->find("code");
  if (c == e->end() || !c->is_string()) return {};
  std::string code = c->get<std::string>();
  return code.size() <= 64 ? code : std::string();
}

Client::Client(asio::io_context& ioc, const Target& target, std::chrono::milliseconds timeout,
               std::string api_key)
    : ioc_(ioc),
      target_(target),
      timeout_(timeout),
      api_key_(std::move(api_key)),
      stream_(std::make_unique<beast::tcp_stream>(ioc)) {}

asio::awaitable<Result> Client::Do(bhttp::verb verb, const std::string& path,
                                   const std::string& body, std::string_view session,
                                   const Headers* extra) {
  Result r;
  error_code ec;
  if (!connected_) {
    stream_->expires_after(timeout_);
    auto address = asio::ip::make_address(target_.host, ec);
    if (!ec) {
      co_await stream_->async_connect(tcp::endpoint(address, target_.port),
                                      redirect_error(use_awaitable, ec));
    }
    if (ec) {
      Reset();
      r.error = ec == beast::error::timeout ? "timeout" : "connect";
      co_return r;
    }
    stream_->socket().set_option(tcp::no_delay(true), ec);
    connected_ = true;
  }
  bhttp::request<bhttp::string_body> req{verb, path, 11};
  req.set(bhttp::field::host, target_.host);
  if (!api_key_.empty()) req.set(bhttp::field::authorization, "Bearer " + api_key_);
  if (!session.empty()) req.set("Edgestate-Session", session);
  if (!body.empty()) {
    req.set(bhttp::field::content_type, "application/json");
    req.body() = body;
  }
  if (extra != nullptr) {
    for (const auto& [name, value] : *extra) req.set(name, value);
  }
  req.prepare_payload();
  stream_->expires_after(timeout_);
  co_await bhttp::async_write(*stream_, req, redirect_error(use_awaitable, ec));
  bhttp::response<bhttp::string_body> res;
  if (!ec) co_await bhttp::async_read(*stream_, buffer_, res, redirect_error(use_awaitable, ec));
  if (ec) {
    Reset();
    r.error = ec == beast::error::timeout ? "timeout" : "io";
    co_return r;
  }
  r.status = res.result_int();
  if (!res.keep_alive()) Reset();
  if (r.status >= 200 && r.status < 300) {
    r.ok = true;
  } else {
    r.error = r.status >= 500 ? "http_5xx" : "http_4xx";
    if (std::string code = ErrorCode(res.body()); !code.empty()) r.error += ":" + code;
  }
  r.staleness_ms = HeaderInt(res, "Edgestate-Staleness-Ms");
  r.waited_ms = HeaderInt(res, "Edgestate-Waited-Ms");
  r.session = Header(res, "Edgestate-Session");
  r.etag = Header(res, "ETag");
  r.cache = Header(res, "Edgestate-Cache");
  r.expires_at = Header(res, "Edgestate-Expires-At");
  r.body = std::move(res.body());
  co_return r;
}

asio::awaitable<void> SleepMs(asio::io_context& ioc, double ms) {
  if (ms <= 0) co_return;
  asio::steady_timer t(ioc, std::chrono::microseconds(static_cast<int64_t>(ms * 1000)));
  error_code ec;
  co_await t.async_wait(redirect_error(use_awaitable, ec));
}

void Client::Reset() {
  error_code ec;
  stream_->socket().close(ec);
  stream_ = std::make_unique<beast::tcp_stream>(ioc_);
  buffer_.clear();
  connected_ = false;
}

}  // namespace edgestate::bench
