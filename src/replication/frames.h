// Decoding of replication frames' contents into what the Keyspace applies (wire.proto). Shared
// by the replicator and the frame fuzz target. Pure functions; thread-safe.
#pragma once

#include <vector>

#include "common/status.h"
#include "replication/wire.pb.h"
#include "service/keyspace.h"

namespace edgestate::replication {

// Frames longer than this close the link (4 KiB while the handshake runs).
inline constexpr size_t kMaxFrameBytes = 8u << 20;
// Slots and records in one delta; a larger delta closes the link.
inline constexpr size_t kMaxDeltaEntries = 4096;

// The slots and register records of a delta. InvalidArgument for more than kMaxDeltaEntries of
// them, an unknown record type or an unreadable register state; names and fields are checked by the
// receiving Keyspace (ApplyRemote), which refuses the whole delta on any bad one.
struct DecodedDelta {
  std::vector<service::SlotUpdate> slots;
  std::vector<service::RegisterUpdate> registers;
};
StatusOr<DecodedDelta> DecodeDelta(const pb::Delta& delta);

}  // namespace edgestate::replication
