// Replication frames from an authenticated peer (what arrives after the TLS and HMAC
// handshakes): a stream of wire frames (4-byte big-endian length, then a Frame), decoded as the
// replicator decodes them and applied to a real Keyspace. A Hello frame sets the sending region
// and life for the frames after it (exercising new lives and retired slots). Checks: nothing
// crashes or hangs, and every counter a delta named reads back after an accepted delta.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <string>
#include <string_view>

#include "fuzz_world.h"
#include "replication/frames.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  edgestate::fuzz::World& w = edgestate::fuzz::GetWorld();
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string region = "lhr";
  uint32_t epoch = 1'760'000'000;
  for (int frames = 0; in.size() >= 4 && frames < 8; ++frames) {
    const auto* p = reinterpret_cast<const unsigned char*>(in.data());
    uint32_t n = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    in.remove_prefix(4);
    if (n > edgestate::replication::kMaxFrameBytes || n > in.size()) return 0;  // Link closed.
    edgestate::replication::pb::Frame f;
    if (!f.ParseFromArray(in.data(), static_cast<int>(n))) return 0;
    in.remove_prefix(n);
    if (f.has_hello()) {
      // Only configured peers get past the handshake.
      if (f.hello().region() == "lhr" || f.hello().region() == "fra") region = f.hello().region();
      if (f.hello().epoch() != 0) epoch = f.hello().epoch();
    } else if (f.has_delta()) {
      const auto& d = f.delta();
      auto decoded = edgestate::replication::DecodeDelta(d);
      if (!decoded.ok()) return 0;
      std::vector<std::string> names;
      for (const auto& s : decoded->slots) names.push_back(s.name);
      std::promise<edgestate::Status> done;
      w.keyspace->ApplyRemote(
          region, epoch, d.covers_seq(), std::move(decoded->slots),
          [&](edgestate::Status s) { done.set_value(std::move(s)); },
          std::move(decoded->registers));
      auto fut = done.get_future();
      if (fut.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
        std::fprintf(stderr, "a delta was not applied within 10 s\n");
        std::abort();
      }
      if (!fut.get().ok()) return 0;  // The link closes.
      for (const std::string& name : names) (void)w.keyspace->Read(name);
    } else if (f.has_heartbeat()) {
      w.keyspace->SetStableSeq(region, epoch, f.heartbeat().stable_seq());
    }
  }
  return 0;
}
