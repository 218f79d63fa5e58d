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
  std::atexit([] { std::filesystem::remove_all(GetWorld().dir); });
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

}  // namespace

World& GetWorld() {
  static World* world = Create();
  return *world;
}

}  // namespace edgestate::fuzz
