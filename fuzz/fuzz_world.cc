#include "fuzz_world.h"

#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <cstdio>
#include <string>

namespace edgestate::fuzz {
namespace {

World* Create() {
  spdlog::set_level(spdlog::level::off);  // Refused input logs; millions of executions.
  auto* w = new World();
  std::string tmpl = (std::filesystem::temp_directory_path() / "edgestate-fuzz-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  w->dir = tmpl;
  auto store = storage::Store::Open(w->dir.string(), {}, 8u << 20);
  if (!store.ok()) {
    std::fprintf(stderr, "fuzz world: %s\n", store.status().ToString().c_str());
    std::abort();
  }
  w->store = std::move(store).value();
  service::KeyspaceOptions o;
  o.region = "iad";
  o.durability = service::Durability::kAsync;  // Acknowledged after the WAL append: fast.
  auto ks = service::Keyspace::Open(w->store.get(), o, &w->metrics);
  if (!ks.ok()) {
    std::fprintf(stderr, "fuzz world: %s\n", ks.status().ToString().c_str());
    std::abort();
  }
  w->keyspace = std::move(ks).value();
  w->view = std::make_unique<replication::SingleNodeView>("iad");
  w->codec = std::make_unique<consistency::SessionCodec>(
      std::vector<std::string>{"iad", "lhr", "fra"}, "fuzz-cluster-secret");
  service::ConsistencyGateOptions g;
  g.region = "iad";
  g.session_wait = std::chrono::milliseconds(1);
  w->gate = std::make_unique<service::ConsistencyGate>(g, w->keyspace.get(), w->view.get(),
                                                       w->codec.get(), &w->metrics);
  http::ApiOptions a;
  a.region = "iad";
  a.data_dir = w->dir.string();
  w->api =
      std::make_unique<http::Api>(a, w->keyspace.get(), w->view.get(), w->gate.get(), &w->metrics);
  return w;
}

World* the_world = nullptr;

// Closes the world (members in reverse order: the API first, the RocksDB store last, which drains
// its queued background jobs) and removes its directory. Registered after the store opened, so
// it runs before RocksDB's own static thread pools are torn down: a DB left open at exit has its
// queued flush arguments dropped with the pool's queue, which LeakSanitizer reports as a leak.
void Destroy() {
  std::filesystem::path dir = the_world->dir;
  delete the_world;
  the_world = nullptr;
  std::filesystem::remove_all(dir);
}

}  // namespace

World& GetWorld() {
  if (the_world == nullptr) {
    the_world = Create();
    std::atexit(Destroy);
  }
  return *the_world;
}

}  // namespace edgestate::fuzz
