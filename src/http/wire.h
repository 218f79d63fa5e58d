// The HTTP/1.1 framing shared by the server and the HTTP fuzz target: how a request Beast
// parsed becomes a handler Request, and how a Response becomes bytes. Pure functions;
// thread-safe.
#pragma once

// clang-format off
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.
// clang-format on
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <string>
#include <string_view>

#include "http/handler.h"

namespace edgestate::http {

// The handler's view of `req`: every field points into `req`, which must outlive it.
Request RequestFrom(const boost::beast::http::request<boost::beast::http::string_body>& req);

// Serializes a response into `out` (reused across requests, so steady state allocates
// nothing). `date_line` is a whole "Date: ...\r\n" line, or empty. Header names and values come
// from the Api (static names, values it generated), never from the client.
void SerializeResponse(const Response& r, unsigned version, bool keep_alive,
                       std::string_view date_line, std::string* out);

}  // namespace edgestate::http
