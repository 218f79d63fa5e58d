#include "http/wire.h"

#include <fmt/format.h>

#include <boost/beast/http/status.hpp>

namespace edgestate::http {

namespace bhttp = boost::beast::http;

Request RequestFrom(const bhttp::request<bhttp::string_body>& req) {
  auto header = [&req](auto name) {
    auto it = req.find(name);
    return it == req.end() ? std::string_view() : it->value();
  };
  auto ttl = req.find("Edgestate-TTL-Ms");
  return Request{req.method_string(),
                 req.target(),
                 req.body(),
                 header(bhttp::field::authorization),
                 header("Edgestate-Consistency"),
                 header("Edgestate-Session"),
                 header(bhttp::field::cookie),
                 header(bhttp::field::content_type),
                 header(bhttp::field::if_match),
                 header(bhttp::field::if_none_match),
                 ttl == req.end() ? std::string_view() : ttl->value(),
                 ttl != req.end(),
                 header(bhttp::field::cache_control)};
}

// Responses are built here in one buffer because Beast's general serializer was a measured hot
// spot.
void SerializeResponse(const Response& r, unsigned version, bool keep_alive,
                       std::string_view date_line, std::string* out) {
  out->clear();
  out->append(version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  out->append(fmt::format_int(r.status).c_str());
  out->push_back(' ');
  out->append(bhttp::obsolete_reason(static_cast<bhttp::status>(r.status)));
  out->append("\r\n");
  out->append(date_line);
  out->append("Content-Type: ");
  out->append(r.owned_content_type.empty() ? r.content_type
                                           : std::string_view(r.owned_content_type));
  out->append("\r\n");
  for (const auto& [name, value] : r.headers) {
    out->append(name);
    out->append(": ");
    out->append(value);
    out->append("\r\n");
  }
  out->append("Content-Length: ");
  out->append(fmt::format_int(r.body.size()).c_str());
  out->append("\r\n");
  if (!keep_alive) {
    out->append("Connection: close\r\n");
  } else if (version == 10) {
    out->append("Connection: keep-alive\r\n");
  }
  out->append("\r\n");
  out->append(r.body);
}

}  // namespace edgestate::http
