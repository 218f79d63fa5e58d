// edgestate-populate: writes N counters straight into a data directory through the storage
// layer, for measuring start-up with a large store (bench/startup.sh).
// Usage: edgestate-populate --data-dir DIR --count N [--region R]
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>

#include "storage/store.h"

int main(int argc, char** argv) {
  CLI::App app{"Fill a data directory with N counters.", "edgestate-populate"};
  std::string dir;
  int64_t count = 1'000'000;
  std::string region = "local";
  app.add_option("--data-dir", dir, "Data directory")->required();
  app.add_option("--count", count, "Number of counters")
      ->check(CLI::Range(int64_t{1}, int64_t{100'000'000}));
  app.add_option("--region", region, "Origin region of the slots");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "edgestate-populate: %s\n", e.what());
    return 2;
  }
  auto store = edgestate::storage::Store::Open(dir);
  if (!store.ok()) {
    std::fprintf(stderr, "edgestate-populate: %s\n", store.status().ToString().c_str());
    return 1;
  }
  auto start = std::chrono::steady_clock::now();
  rocksdb::WriteBatch wb;
  for (int64_t i = 0; i < count; ++i) {
    edgestate::crdt::PnCounter c;
    if (!c.Add(region, i % 1000 + 1, 1'700'000'000'000 + i).ok()) return 1;
    wb.Put(edgestate::storage::CounterKey("counter-" + std::to_string(i)),
           edgestate::storage::EncodeCounter(c));
    if (wb.Count() == 10000 || i + 1 == count) {
      if (auto s = (*store)->Write(&wb, /*sync=*/i + 1 == count); !s.ok()) {
        std::fprintf(stderr, "edgestate-populate: %s\n", s.ToString().c_str());
        return 1;
      }
      wb.Clear();
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("wrote %lld counters to %s in %.2f s\n", static_cast<long long>(count), dir.c_str(),
              secs);
  return 0;
}
