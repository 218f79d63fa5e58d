// Every other parser of untrusted text or bytes, one per input (its first byte picks which):
// increment bodies (JSON), origin URLs, Cache-Control, percent-decoding and query parameters,
// consistency levels, peer lists and addresses, retired-life slot names, the stored record
// decoders (a peer's register state; a counter's bytes), and what DNS answers for peer discovery
// (--peers-dns specs, Fly's vms TXT text, SRV target names). Checks: no crash, and decoders'
// results re-encode to what decodes to the same value.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/region.h"
#include "consistency/consistency.h"
#include "http/api.h"
#include "http/origin.h"
#include "http/router.h"
#include "replication/discovery.h"
#include "replication/peers.h"
#include "service/keyspace.h"
#include "storage/store.h"

namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "parsers: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace es = edgestate;
  if (size == 0) return 0;
  const uint8_t which = data[0];
  std::string_view s(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (which % 14) {
    case 0:
      (void)es::http::ParseIncrementBody(s);
      break;
    case 1:
      (void)es::http::ParseOriginUrl(s);
      break;
    case 2: {
      es::http::CachePolicy p = es::http::PolicyFor(s, 60'000);
      (void)p;
      break;
    }
    case 3: {
      auto d = es::http::PercentDecode(s);
      if (d.ok()) {
        auto again = es::http::PercentDecode(es::http::PercentEncode(*d));
        Check(again.ok() && *again == *d, "percent-encoding does not round-trip");
      }
      break;
    }
    case 4:
      (void)es::http::QueryParam(s, "ttl_ms");
      break;
    case 5: {
      size_t split = s.find('\n');
      std::string_view target = s.substr(0, split);
      std::string_view header = split == std::string_view::npos ? "" : s.substr(split + 1);
      (void)es::consistency::ParseRequested(target, header, es::consistency::Level::kLocal);
      break;
    }
    case 6:
      (void)es::replication::ParsePeers(s, "iad");
      break;
    case 7:
      (void)es::replication::ParseHostPort(s, (which & 0x80) != 0);
      break;
    case 8: {
      std::string_view region;
      uint32_t epoch = 0;
      if (es::service::ParseRetiredOrigin(s, &region, &epoch)) {
        Check(es::service::RetiredOrigin(region, epoch) == s, "a retired life does not round-trip");
      }
      break;
    }
    case 9: {
      auto r = es::storage::DecodeRegister(s);
      if (r.ok()) {
        auto again = es::storage::DecodeRegister(es::storage::EncodeRegister(*r));
        Check(again.ok() && again->reg == r->reg && again->local_seq == r->local_seq &&
                  again->relay == r->relay,
              "a register does not round-trip");
      }
      break;
    }
    case 10: {
      auto c = es::storage::DecodeCounter(s);
      if (c.ok()) {
        (void)c->Value();
        auto again = es::storage::DecodeCounter(es::storage::EncodeCounter(*c));
        Check(again.ok() && *again == *c, "a counter does not round-trip");
      }
      break;
    }
    case 11:
      (void)es::replication::ParseDiscoverySpec(s);
      break;
    case 12:
      for (const auto& m : es::replication::ParseFlyVms(s)) {
        Check(!m.id.empty() && es::IsRegionName(m.region), "a Fly machine without id or region");
      }
      break;
    case 13:
      if (auto pod = es::replication::ParseSrvTarget(s)) {
        Check(es::IsRegionName(pod->region), "an SRV target with an invalid region");
      }
      break;
  }
  return 0;
}
