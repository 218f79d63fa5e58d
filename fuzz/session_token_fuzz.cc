// Session tokens as clients send them (Edgestate-Session, the cookie): decoding must refuse
// anything this cluster did not issue and never crash; a token that decodes re-encodes to one
// that decodes to the same position. Also encodes positions made from the input and checks
// the round trip.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "consistency/session_token.h"

namespace {

const edgestate::consistency::SessionCodec& Codec() {
  static const edgestate::consistency::SessionCodec codec({"iad", "lhr", "fra"},
                                                          "fuzz-cluster-secret");
  return codec;
}

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "session token: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& codec = Codec();
  std::string_view token(reinterpret_cast<const char*>(data), size);
  auto p = codec.Decode(token);
  if (p.ok()) {
    auto again = codec.Decode(codec.Encode(*p));
    Check(again.ok() && *again == *p, "a decoded token does not round-trip");
  }
  // A position from the input's bytes: 3 x (epoch u32, seq u64), for fra, iad and lhr.
  if (size >= 36) {
    static const char* const kRegions[] = {"fra", "iad", "lhr"};
    edgestate::consistency::Position pos;
    for (size_t i = 0; i < 3; ++i) {
      edgestate::consistency::OriginPosition at;
      std::memcpy(&at.epoch, data + i * 12, 4);
      std::memcpy(&at.seq, data + i * 12 + 4, 8);
      edgestate::consistency::SetAt(&pos, kRegions[i], at);
    }
    auto back = codec.Decode(codec.Encode(pos));
    Check(back.ok() && *back == pos, "an encoded position does not round-trip");
  }
  return 0;
}
