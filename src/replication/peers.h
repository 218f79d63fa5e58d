// Peer addresses: "--peers lhr=10.0.0.2:7100,fra=[::1]:7100". Pure; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace edgestate::replication {

struct HostPort {
  std::string host;  // IP address or DNS name (brackets stripped from IPv6).
  uint16_t port = 0;
};

struct PeerAddress {
  std::string region;
  HostPort address;
};

// "host:port" or "[v6]:port". InvalidArgument on a missing or bad port or empty host. Port 0
// (pick a free one) only when `allow_port_zero`, as for a listener.
StatusOr<HostPort> ParseHostPort(std::string_view s, bool allow_port_zero = false);
// "host:port", with brackets around an IPv6 address ("[::1]:7946"): what ParseHostPort reads.
std::string FormatHostPort(const HostPort& hp);

// "region=host:port,..." (empty string: no peers). The entry of `self` (this node's region) is
// checked and left out, so every node of a cluster can be given the same list. InvalidArgument
// on a bad entry, a region that breaks the region rules, or a region listed twice.
StatusOr<std::vector<PeerAddress>> ParsePeers(std::string_view s, std::string_view self);

}  // namespace edgestate::replication
