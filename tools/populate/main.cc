// edgestate-populate: writes N counters and K keys straight into a data directory through the
// storage layer, laid out as a node writes them (own writes with their sequence numbers and
// change-index entries), for measuring start-up with a large store (bench/startup_bench.py).
// Usage: edgestate-populate --data-dir DIR --count N [--keys K] [--value-bytes B] [--region R]
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <string>

#include "storage/store.h"

namespace {

namespace storage = edgestate::storage;

int Fail(const edgestate::Status& s) {
  std::fprintf(stderr, "edgestate-populate: %s\n", s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Fill a data directory with N counters and K keys.", "edgestate-populate"};
  std::string dir;
  int64_t count = 1'000'000;
  int64_t keys = 0;
  int64_t value_bytes = 100;
  std::string region = "local";
  app.add_option("--data-dir", dir, "Data directory")->required();
  app.add_option("--count", count, "Number of counters")
      ->check(CLI::Range(int64_t{0}, int64_t{100'000'000}));
  app.add_option("--keys", keys, "Number of keys (sessions) without expiry")
      ->check(CLI::Range(int64_t{0}, int64_t{100'000'000}));
  app.add_option("--value-bytes", value_bytes, "Bytes of each key's value")
      ->check(CLI::Range(int64_t{0}, int64_t{1 << 20}));
  app.add_option("--region", region, "The region whose own writes they are");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "edgestate-populate: %s\n", e.what());
    return 2;
  }
  auto store = storage::Store::Open(dir);
  if (!store.ok()) return Fail(store.status());
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  // The data directory's epoch, as a node would create it (Keyspace::Load).
  auto epoch_text = (*store)->GetOrCreateMeta("epoch", std::to_string(now_ms / 1000));
  if (!epoch_text.ok()) return Fail(epoch_text.status());
  const uint32_t epoch = static_cast<uint32_t>(std::stoul(*epoch_text));

  auto start = std::chrono::steady_clock::now();
  rocksdb::WriteBatch wb;
  uint64_t seq = 0;
  const int64_t total = count + keys;
  const std::string value(static_cast<size_t>(value_bytes), 'v');
  for (int64_t i = 0; i < total; ++i) {
    ++seq;
    if (i < count) {
      const std::string name = "counter-" + std::to_string(i);
      edgestate::crdt::PnCounter c;
      if (!c.Add(region, i % 1000 + 1, now_ms - count + i, seq).ok()) return 1;
      wb.Put(storage::CounterKey(name), storage::EncodeCounter(c));
      wb.Put(storage::ChangeKey(seq), storage::EncodeChange(storage::RecordType::kCounter, name));
    } else {
      const std::string name = "key-" + std::to_string(i - count);
      edgestate::crdt::LwwRegister r;
      r.hlc = {now_ms - total + i, 0};
      r.origin = region;
      r.origin_seq = seq;
      r.origin_epoch = epoch;
      r.content_type = "application/octet-stream";
      r.value = value;
      wb.Put(storage::RecordKey(storage::RecordType::kKey, name), storage::EncodeRegister(r, seq));
      wb.Put(storage::ChangeKey(seq), storage::EncodeChange(storage::RecordType::kKey, name));
    }
    if (wb.Count() >= 20000 || i + 1 == total) {
      if (i + 1 == total) wb.Put(storage::MetaKey("last-seq"), std::to_string(seq));
      if (auto s = (*store)->Write(&wb, /*sync=*/i + 1 == total); !s.ok()) return Fail(s);
      wb.Clear();
    }
  }
  if (auto s = (*store)->CompactAll(); !s.ok()) return Fail(s);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("wrote %lld counters and %lld keys to %s in %.2f s\n", static_cast<long long>(count),
              static_cast<long long>(keys), dir.c_str(), secs);
  return 0;
}
