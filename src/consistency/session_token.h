// Session tokens (docs/consistency.md): what a client has seen, as a version vector over
// regions, each entry carrying its region's data-directory epoch, authenticated with a key
// derived from the cluster secret so that a client can neither forge a position (and make nodes
// wait for writes that never happened) nor carry a token between clusters.
//
// A Position names its regions: entries are sorted by region, at most one per region, and only
// regions with a write seen (seq > 0) are listed. Epochs order a region's lives: a region whose
// data directory was recreated has a larger epoch, and its sequence numbers start again.
//
// Two token formats: version 1, positional over the configured region list (this node and its
// --peers; eight regions fit in 128 characters), issued while a position names only configured
// regions; version 2 names its regions, so a token stays valid while regions join and leave
// (peers found by DNS), issued otherwise. Every node decodes both.
//
// Pure apart from the HMAC: no I/O, no clock reads. Thread-safety: a SessionCodec is immutable
// after construction, and every function here is safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace edgestate::consistency {

struct OriginPosition {
  uint32_t epoch = 0;  // 0: nothing of this region seen (or, at a node: never heard from).
  uint64_t seq = 0;    // Every write of the region's life `epoch` with seq <= this.
  bool operator==(const OriginPosition&) const = default;
};

struct RegionPosition {
  std::string region;
  OriginPosition at;
  bool operator==(const RegionPosition&) const = default;
};
// Canonical form: sorted by region, no region twice, no entry with seq 0 (a region absent is
// at {0, 0}). Every function here returns canonical positions and expects canonical input.
using Position = std::vector<RegionPosition>;

// The entry of `region` ({0, 0} when absent). O(log n).
OriginPosition At(const Position& p, std::string_view region);
// Sets the entry of `region` (removes it when at.seq == 0), keeping `p` canonical.
void SetAt(Position* p, std::string_view region, OriginPosition at);

// The least position at or above both: per region, the later epoch's entry; within one epoch,
// the higher seq. Commutative, associative, idempotent.
Position Merge(const Position& a, const Position& b);

// Whether a node at `node` (per region: the epoch it knows and the seq it has applied) has
// everything `token` names. Regions are named, in `token`'s order.
struct Coverage {
  std::vector<std::string> missing;  // Not applied here yet (or this node knows an older epoch).
  std::vector<std::string> lost;     // This node knows a newer epoch: those writes are gone.
  bool ok() const { return missing.empty() && lost.empty(); }
};
Coverage Covers(const Position& node, const Position& token);

// A token names at most this many regions (about 2 KiB of text at the longest names); a node
// encodes the regions it has applied writes of, so a cluster has at most this many regions.
inline constexpr size_t kMaxTokenRegions = 64;
inline constexpr size_t kMaxTokenChars = 4096;

class SessionCodec {
 public:
  // `secret`: the key material (the cluster secret; a node without peers uses a secret of its
  // own); every node of a cluster must be given the same. `configured`: the configured region
  // list (any order, duplicates dropped), over which version-1 tokens are positional: nodes with
  // static peers must be given the same list; empty (peers found by DNS): only version 2.
  SessionCodec(std::vector<std::string> configured, std::string_view secret);

  // base64url without padding: version 1 when every region of `p` is configured, else version 2.
  // REQUIRES: `p` canonical, at most kMaxTokenRegions entries, valid region names.
  std::string Encode(const Position& p) const;
  // InvalidArgument for anything that is not a token this cluster issued: bad base64, too long,
  // truncated, a wrong MAC (forged or from another cluster), a body that is not canonical or
  // names an invalid region; for version 1, a wrong number of regions.
  StatusOr<Position> Decode(std::string_view token) const;

 private:
  StatusOr<Position> DecodeV1(std::string_view body) const;

  std::vector<std::string> configured_;  // The configured regions; sorted, unique.
  std::string key_;                      // Version 2: bound to the secret only.
  std::string key_v1_;                   // Version 1: bound to the secret and configured_.
};

}  // namespace edgestate::consistency
