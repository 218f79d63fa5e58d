// The WAN emulator's control interface, served over HTTP on loopback:
//   GET  /links                          -> [{"from","to","port","cut","one_way_ms",
//                                             "bytes_forward","bytes_backward",...}]
//   POST /links/{from}/{to}/cut | heal   -> {"ok":true}
//   POST /regions/{region}/isolate | rejoin
// Errors are the usual JSON error bodies (404 unknown link or region, 405, 400).
#pragma once

#include <memory>

#include "common/metrics.h"
#include "http/handler.h"
#include "http/http_metrics.h"
#include "http/server.h"
#include "netem/wan.h"

namespace edgestate::netem {

class ControlHandler : public http::Handler {
 public:
  explicit ControlHandler(WanEmulator* wan) : wan_(wan) {}
  std::optional<http::Response> Handle(const http::Request& req,
                                       const std::function<http::Responder()>& defer) override;

 private:
  WanEmulator* const wan_;
};

// The control interface served on 127.0.0.1. `wan` must outlive it.
class ControlServer {
 public:
  explicit ControlServer(WanEmulator* wan) : http_metrics_(&metrics_), handler_(wan) {}
  // Binds 127.0.0.1:port (0: a free port). Unavailable when it cannot.
  Status Start(uint16_t port);
  uint16_t port() const { return server_ ? server_->port() : 0; }
  void Shutdown() {
    if (server_) server_->Shutdown();
  }

 private:
  MetricsRegistry metrics_;
  http::HttpMetrics http_metrics_;
  ControlHandler handler_;
  std::unique_ptr<http::HttpServer> server_;
};

}  // namespace edgestate::netem
