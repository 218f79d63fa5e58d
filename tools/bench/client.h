// Client: one keep-alive HTTP/1.1 connection from edgebench to one target, as a coroutine API.
//
// Thread-safety: none; a Client lives on one io_context and is used by one coroutine at a time.
// Errors are values: Do never throws, and a failed exchange closes the connection (the next Do
// reconnects).
#pragma once

// clang-format off
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.
// clang-format on
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bench/options.h"

namespace edgestate::bench {

struct Result {
  bool ok = false;  // A 2xx answer.
  unsigned status = 0;
  // Kind: connect, timeout, io, http_4xx, http_5xx; with the server's error code when the body
  // names one ("http_5xx:session_unavailable").
  std::string error;
  std::string body;
  int64_t staleness_ms = -1;
  int64_t waited_ms = -1;  // Edgestate-Waited-Ms: how long the node held the request.
  std::string session;     // Edgestate-Session: the session's new token.
  std::string etag;
  std::string cache;       // Edgestate-Cache: hit or miss.
  std::string expires_at;  // Edgestate-Expires-At (ISO 8601), when sent.
};

using Headers = std::vector<std::pair<std::string, std::string>>;

class Client {
 public:
  // `target` must outlive the client.
  Client(boost::asio::io_context& ioc, const Target& target, std::chrono::milliseconds timeout,
         std::string api_key);

  // One request; `session` is sent as Edgestate-Session when not empty, a non-empty `body` as
  // application/json, and `extra` as further headers. Each step (connect, write, read) has
  // `timeout`.
  boost::asio::awaitable<Result> Do(boost::beast::http::verb verb, const std::string& path,
                                    const std::string& body, std::string_view session = {},
                                    const Headers* extra = nullptr);

 private:
  void Reset();

  boost::asio::io_context& ioc_;
  const Target& target_;
  std::chrono::milliseconds timeout_;
  std::string api_key_;
  std::unique_ptr<boost::beast::tcp_stream> stream_;
  boost::beast::flat_buffer buffer_;
  bool connected_ = false;
};

// Waits `ms` milliseconds (nothing when ms <= 0) on `ioc`.
boost::asio::awaitable<void> SleepMs(boost::asio::io_context& ioc, double ms);

// The "code" of a JSON error body ({"error":{"code":...}}), or empty.
std::string ErrorCode(std::string_view body);

}  // namespace edgestate::bench
