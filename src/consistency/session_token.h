// Session tokens (docs/consistency.md): what a client has seen, as a version vector over the
// cluster's regions, each entry carrying its region's data-directory epoch, authenticated
// with a key derived from the cluster secret so that a client can neither forge a position
// (and make nodes wait for writes that never happened) nor carry a token between clusters.
//
// A Position is dense and positional: entry i belongs to region i of the cluster's sorted
// region list (SessionCodec::regions()). Epochs order a region's lives: a region whose data
// directory was recreated has a larger epoch, and its sequence numbers start again.
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
using Position = std::vector<OriginPosition>;

// The least position at or above both: per region, the later epoch's entry; within one epoch,
// the higher seq. Commutative, associative, idempotent. A shorter vector is padded with zeros.
Position Merge(const Position& a, const Position& b);

// Whether a node at `node` (per region: the epoch it knows and the seq it has applied) has
// everything `token` names.
struct Coverage {
  std::vector<size_t> missing;  // Not applied here yet (or this node knows an older epoch).
  std::vector<size_t> lost;     // This node knows a newer epoch: those writes are gone for good.
  bool ok() const { return missing.empty() && lost.empty(); }
};
Coverage Covers(const Position& node, const Position& token);

inline constexpr size_t kMaxTokenChars = 1024;

class SessionCodec {
 public:
  // `regions`: every region of the cluster, this node's included, in any order (duplicates are
  // dropped). `secret`: the key material (the cluster secret; a node without peers uses a
  // secret of its own). Every node of a cluster must be given the same regions and secret.
  SessionCodec(std::vector<std::string> regions, std::string_view secret);

  const std::vector<std::string>& regions() const { return regions_; }
  std::optional<size_t> IndexOf(std::string_view region) const;

  // base64url without padding. REQUIRES: p.size() == regions().size().
  std::string Encode(const Position& p) const;
  // InvalidArgument for anything that is not a token this cluster issued: bad base64, too long,
  // truncated, a wrong MAC (forged or from another cluster), a wrong number of regions.
  StatusOr<Position> Decode(std::string_view token) const;

 private:
  std::string Mac(std::string_view data) const;

  std::vector<std::string> regions_;
  std::string key_;
};

}  // namespace edgestate::consistency
