// The WAN emulator's control interface, served over HTTP on loopback:
//   GET  /links                          -> [{"from","to","port","cut","one_way_ms",
//                                             "bytes_forward","bytes_backward",...}]
//   POST /links/{from}/{to}/cut | heal   -> {"ok":true}
//   POST /regions/{region}/isolate | rejoin
// Errors are the usual JSON error bodies (404 unknown link or region, 405, 400).
#pragma once

#include "http/handler.h"
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

}  // namespace edgestate::netem
