#include "replication/peers.h"

#include <fmt/format.h>

#include <charconv>
#include <set>

#include "common/region.h"

namespace edgestate::replication {

StatusOr<HostPort> ParseHostPort(std::string_view s, bool allow_port_zero) {
  HostPort hp;
  std::string_view port;
  if (s.starts_with("[")) {
    size_t close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      return Status::InvalidArgument(fmt::format("\"{}\" is not [address]:port", s));
    }
    hp.host = std::string(s.substr(1, close - 1));
    port = s.substr(close + 2);
  } else {
    size_t colon = s.rfind(':');
    if (colon == std::string_view::npos) {
      return Status::InvalidArgument(fmt::format("\"{}\" has no :port", s));
    }
    hp.host = std::string(s.substr(0, colon));
    port = s.substr(colon + 1);
    if (hp.host.find(':') != std::string::npos) {
      return Status::InvalidArgument(fmt::format("IPv6 address in \"{}\" needs brackets", s));
    }
  }
  if (hp.host.empty()) return Status::InvalidArgument(fmt::format("\"{}\" has no host", s));
  unsigned v = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
  if (ec != std::errc() || ptr != port.data() + port.size() || port.empty() ||
      (v == 0 && !allow_port_zero) || v > 65535) {
    return Status::InvalidArgument(fmt::format("\"{}\" has a bad port", s));
  }
  hp.port = static_cast<uint16_t>(v);
  return hp;
}

std::string FormatHostPort(const HostPort& hp) {
  return hp.host.find(':') != std::string::npos ? fmt::format("[{}]:{}", hp.host, hp.port)
                                                : fmt::format("{}:{}", hp.host, hp.port);
}

StatusOr<std::vector<PeerAddress>> ParsePeers(std::string_view s, std::string_view self) {
  std::vector<PeerAddress> out;
  std::set<std::string, std::less<>> seen;
  while (!s.empty()) {
    size_t comma = s.find(',');
    std::string_view item = s.substr(0, comma);
    s = comma == std::string_view::npos ? std::string_view() : s.substr(comma + 1);
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return Status::InvalidArgument(fmt::format("peer \"{}\" is not REGION=HOST:PORT", item));
    }
    PeerAddress p;
    p.region = std::string(item.substr(0, eq));
    if (Status st = ValidateRegionName(p.region); !st.ok()) return st;
    if (!seen.insert(p.region).second) {
      return Status::InvalidArgument(fmt::format("peer region {} is listed twice", p.region));
    }
    auto hp = ParseHostPort(item.substr(eq + 1));
    if (!hp.ok()) return hp.status();
    p.address = std::move(hp).value();
    if (p.region == self) continue;  // This node: every node can be given the same list.
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace edgestate::replication
