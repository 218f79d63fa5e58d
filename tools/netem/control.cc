#include "netem/control.h"

#include <nlohmann/json.hpp>
#include <vector>

#include "http/errors.h"

namespace edgestate::netem {
namespace {

http::Response Json(unsigned status, std::string body) {
  http::Response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

http::Response Error(unsigned status, std::string_view message) {
  return Json(status, http::ErrorBody(http::ErrorCodeFor(status), message));
}

std::vector<std::string> Segments(std::string_view path) {
  std::vector<std::string> out;
  path = path.substr(0, path.find('?'));
  size_t pos = 1;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    out.emplace_back(path.substr(pos, slash == std::string_view::npos ? path.npos : slash - pos));
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  return out;
}

}  // namespace

std::optional<http::Response> ControlHandler::Handle(const http::Request& req,
                                                     const std::function<http::Responder()>&) {
  std::vector<std::string> seg = Segments(req.target);
  if (seg.size() == 1 && seg[0] == "links") {
    if (req.method != "GET") return Error(405, "use GET");
    nlohmann::json j = nlohmann::json::array();
    for (const LinkStats& s : wan_->Stats()) {
      j.push_back({{"from", s.from},
                   {"to", s.to},
                   {"port", s.port},
                   {"cut", s.cut},
                   {"one_way_ms", s.one_way_ms},
                   {"bytes_forward", s.bytes_forward},
                   {"bytes_backward", s.bytes_backward},
                   {"connections", s.connections},
                   {"open_connections", s.open_connections},
                   {"late_p50_ms", s.late_p50_ms},
                   {"late_p99_ms", s.late_p99_ms},
                   {"late_samples", s.late_samples}});
    }
    return Json(200, j.dump());
  }
  Status st = Status::NotFound("no such control endpoint");
  bool matched = false;
  if (seg.size() == 4 && seg[0] == "links" && (seg[3] == "cut" || seg[3] == "heal")) {
    matched = true;
    if (req.method == "POST")
      st = seg[3] == "cut" ? wan_->Cut(seg[1], seg[2]) : wan_->Heal(seg[1], seg[2]);
  } else if (seg.size() == 3 && seg[0] == "regions" &&
             (seg[2] == "isolate" || seg[2] == "rejoin")) {
    matched = true;
    if (req.method == "POST")
      st = seg[2] == "isolate" ? wan_->Isolate(seg[1]) : wan_->Rejoin(seg[1]);
  }
  if (matched && req.method != "POST") {
    http::Response r = Error(405, "use POST");
    r.headers.emplace_back("Allow", "POST");
    return r;
  }
  if (!st.ok()) return Error(http::HttpStatusFor(st.code()), st.message());
  return Json(200, R"({"ok":true})");
}

Status ControlServer::Start(uint16_t port) {
  http::HttpServerOptions o;
  o.listen_address = "127.0.0.1";
  o.port = port;
  o.threads = 1;
  server_ = std::make_unique<http::HttpServer>(o, &handler_, &http_metrics_);
  return server_->Start();
}

}  // namespace edgestate::netem
