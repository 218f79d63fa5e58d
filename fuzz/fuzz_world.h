// A node's state for in-process fuzz targets: a Keyspace on a scratch RocksDB directory (removed
// at exit), a consistency gate and the HTTP API over them, as `edgestate serve` wires them for a
// node without peers. Created on first use; closed at exit (after the objects of any target's own
// world, which register their exit handlers after they first call GetWorld). Not thread-safe:
// fuzz targets call it from libFuzzer's one thread.
#pragma once

#include <filesystem>
#include <memory>

#include "common/metrics.h"
#include "consistency/session_token.h"
#include "http/api.h"
#include "replication/replicator.h"
#include "service/consistency_gate.h"
#include "service/keyspace.h"
#include "storage/store.h"

namespace edgestate::fuzz {

struct World {
  std::filesystem::path dir;
  MetricsRegistry metrics;
  std::unique_ptr<storage::Store> store;
  std::unique_ptr<service::Keyspace> keyspace;
  std::unique_ptr<replication::SingleNodeView> view;
  std::unique_ptr<consistency::SessionCodec> codec;
  std::unique_ptr<service::ConsistencyGate> gate;
  std::unique_ptr<http::Api> api;
};

// The process's world, region "iad" (regions known to session tokens: iad, lhr, fra).
World& GetWorld();

}  // namespace edgestate::fuzz
