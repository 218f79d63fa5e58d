// HttpServer: HTTP/1.1 on Boost.Beast, one io_context per I/O thread.
//
// Threading (docs/threading.md): the acceptor lives on I/O thread 0 and hands each accepted
// socket to the I/O threads round-robin; a connection then lives on one thread for its whole
// life, and everything it touches is that thread's. Deferred responses (writes that wait for
// group commit) come back by posting to the connection's thread.
//
// Hostile clients: a whole request must arrive within `request_timeout` of the read starting
// (idle keep-alive time included), so slow-header and idle clients are closed, and a response
// must leave within `write_timeout`. Deadlines are enforced by a per-thread sweep every
// min(request_timeout, write_timeout)/10 (clamped to 5..250 ms), so a connection is closed
// within one sweep interval of its deadline; headers are
// limited to `max_header_bytes` (431), bodies to `max_body_bytes` (413); malformed HTTP gets a
// 400 and the connection is closed; at `max_connections` new connections get a 503 and are
// closed at once, so a flood cannot grow memory or starve the established clients.
//
// TLS (`tls` set): every connection first completes a TLS handshake within `request_timeout`;
// a client that never starts one is closed by the same sweep. ReplaceTls swaps the context for
// the connections accepted afterwards; established ones keep theirs until they close.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "http/handler.h"
#include "http/http_metrics.h"

namespace boost::asio::ssl {
class context;
}  // namespace boost::asio::ssl

namespace edgestate::http {

struct HttpServerOptions {
  std::string listen_address = "0.0.0.0";
  uint16_t port = 8080;  // 0 picks a free port; see HttpServer::port().
  int threads = 1;
  // The I/O threads are named "<thread_name>-<i>" (common/thread_name.h).
  std::string thread_name = "es-http";
  size_t max_connections = 10000;
  std::chrono::milliseconds request_timeout{15000};
  std::chrono::milliseconds write_timeout{15000};
  std::chrono::milliseconds drain_timeout{5000};
  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 1 << 20;  // The largest value of a key or cache entry.
  // Serve TLS with this context (http/tls.h, LoadServerTls); null: plain HTTP.
  std::shared_ptr<boost::asio::ssl::context> tls;
};

class HttpServer {
 public:
  // `handler` and `metrics` must outlive the server.
  HttpServer(HttpServerOptions options, Handler* handler, HttpMetrics* metrics);
  // REQUIRES: nothing calls a Responder any more (stop the services that complete deferred
  // requests first).
  ~HttpServer();

  // Binds, listens and starts the I/O threads. Unavailable when the address cannot be bound.
  Status Start();
  // The bound port (useful with port 0). REQUIRES: Start() succeeded.
  uint16_t port() const;
  size_t active_connections() const;
  // The context for connections accepted from now on (a reloaded certificate). Thread-safe.
  // REQUIRES: the server was started with a TLS context, and `tls` is not null.
  void ReplaceTls(std::shared_ptr<boost::asio::ssl::context> tls);

  // Stops accepting, closes idle connections, lets in-flight requests finish and sends their
  // responses with "Connection: close", then stops the I/O threads. Returns within about
  // drain_timeout. Responders called after this are dropped. Idempotent.
  void Shutdown();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace edgestate::http
