#include "consistency/session_token.h"

#include <nettle/base64.h>
#include <nettle/hmac.h>
#include <nettle/memops.h>

#include <algorithm>
#include <cctype>

#include "common/region.h"
#include "consistency/session.pb.h"

namespace edgestate::consistency {
namespace {

constexpr char kVersion1 = 1;  // Positional over the configured regions.
constexpr char kVersion2 = 2;  // Named regions.
constexpr size_t kMacBytes = 8;

// Nettle rather than OpenSSL: every answer carries a token, so the first answer after exec waits
// for the first MAC, and OpenSSL 3's first use (its providers and algorithm tables) costs 0.7-3
// ms of a start on these machines against about 1 us here (docs/storage.md, "Start-up").
std::string HmacSha256(std::string_view key, std::string_view data) {
  hmac_sha256_ctx ctx;
  hmac_sha256_set_key(&ctx, key.size(), reinterpret_cast<const uint8_t*>(key.data()));
  hmac_sha256_update(&ctx, data.size(), reinterpret_cast<const uint8_t*>(data.data()));
  std::string out(SHA256_DIGEST_SIZE, '\0');
  hmac_sha256_digest(&ctx, SHA256_DIGEST_SIZE, reinterpret_cast<uint8_t*>(out.data()));
  return out;
}

// base64url (RFC 4648 5) without padding.
std::string Base64UrlEncode(std::string_view bytes) {
  base64_encode_ctx ctx;
  base64url_encode_init(&ctx);
  std::string out(BASE64_ENCODE_LENGTH(bytes.size()) + BASE64_ENCODE_FINAL_LENGTH, '\0');
  size_t n = base64_encode_update(&ctx, out.data(), bytes.size(),
                                  reinterpret_cast<const uint8_t*>(bytes.data()));
  n += base64_encode_final(&ctx, out.data() + n);
  out.resize(n);
  while (!out.empty() && out.back() == '=') out.pop_back();
  return out;
}

std::optional<std::string> Base64UrlDecode(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  for (char c : text) {
    // Nettle's decoder skips white space and takes '=' as padding; tokens have neither.
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
          c == '_')) {
      return std::nullopt;
    }
  }
  std::string padded(text);
  padded.append((4 - text.size() % 4) % 4, '=');
  base64_decode_ctx ctx;
  base64url_decode_init(&ctx);
  std::string out(BASE64_DECODE_LENGTH(padded.size()), '\0');
  size_t n = out.size();
  // Refuses, besides, trailing bits that are not zero (a second spelling of the same bytes).
  if (!base64_decode_update(&ctx, &n, reinterpret_cast<uint8_t*>(out.data()), padded.size(),
                            padded.data()) ||
      !base64_decode_final(&ctx)) {
    return std::nullopt;
  }
  out.resize(n);
  return out;
}

}  // namespace

OriginPosition At(const Position& p, std::string_view region) {
  auto it =
      std::lower_bound(p.begin(), p.end(), region,
                       [](const RegionPosition& e, std::string_view r) { return e.region < r; });
  return it != p.end() && it->region == region ? it->at : OriginPosition{};
}

void SetAt(Position* p, std::string_view region, OriginPosition at) {
  auto it =
      std::lower_bound(p->begin(), p->end(), region,
                       [](const RegionPosition& e, std::string_view r) { return e.region < r; });
  const bool present = it != p->end() && it->region == region;
  if (at.seq == 0) {
    if (present) p->erase(it);
  } else if (present) {
    it->at = at;
  } else {
    p->insert(it, RegionPosition{std::string(region), at});
  }
}

Position Merge(const Position& a, const Position& b) {
  Position out;
  out.reserve(std::max(a.size(), b.size()));
  auto x = a.begin(), y = b.begin();
  while (x != a.end() || y != b.end()) {
    if (y == b.end() || (x != a.end() && x->region < y->region)) {
      out.push_back(*x++);
    } else if (x == a.end() || y->region < x->region) {
      out.push_back(*y++);
    } else {
      const OriginPosition& u = x->at;
      const OriginPosition& v = y->at;
      OriginPosition m = u.epoch != v.epoch ? (u.epoch > v.epoch ? u : v)
                                            : OriginPosition{u.epoch, std::max(u.seq, v.seq)};
      out.push_back({x->region, m});
      ++x;
      ++y;
    }
  }
  return out;
}

Coverage Covers(const Position& node, const Position& token) {
  Coverage c;
  auto have_it = node.begin();
  for (const RegionPosition& want : token) {
    if (want.at.seq == 0) continue;  // Nothing of that region seen: nothing to wait for.
    while (have_it != node.end() && have_it->region < want.region) ++have_it;
    OriginPosition have =
        have_it != node.end() && have_it->region == want.region ? have_it->at : OriginPosition{};
    if (have.epoch > want.at.epoch) {
      c.lost.push_back(want.region);
    } else if (have.epoch < want.at.epoch || have.seq < want.at.seq) {
      c.missing.push_back(want.region);
    }
  }
  return c;
}

SessionCodec::SessionCodec(std::vector<std::string> configured, std::string_view secret)
    : configured_(std::move(configured)) {
  std::sort(configured_.begin(), configured_.end());
  configured_.erase(std::unique(configured_.begin(), configured_.end()), configured_.end());
  key_ = HmacSha256(secret, "edgestate session token v2");
  // Version 1's key bound the secret to the region list, so a token of another cluster (another
  // secret, or other regions at the same positions) fails its MAC.
  std::string context = "edgestate session token v1";
  for (const std::string& r : configured_) context.append(1, '\0').append(r);
  key_v1_ = HmacSha256(secret, context);
}

std::string SessionCodec::Encode(const Position& p) const {
  std::string raw;
  // Version 1 while every region named is a configured one (8 regions: at most 128 characters);
  // version 2, about 30 % longer, once a region outside the list was seen.
  bool positional = !configured_.empty();
  for (const RegionPosition& e : p) {
    positional = positional && std::binary_search(configured_.begin(), configured_.end(), e.region);
  }
  if (positional) {
    pb::SessionPosition msg;
    for (const std::string& region : configured_) {
      OriginPosition at = At(p, region);
      msg.add_epoch(at.epoch);
      msg.add_seq(at.seq);
    }
    raw.assign(1, kVersion1);
    msg.AppendToString(&raw);
    raw += HmacSha256(key_v1_, raw).substr(0, kMacBytes);
  } else {
    pb::SessionPositionV2 msg;
    for (const RegionPosition& e : p) {
      pb::SessionEntry* entry = msg.add_entry();
      entry->set_region(e.region);
      entry->set_epoch(e.at.epoch);
      entry->set_seq(e.at.seq);
    }
    raw.assign(1, kVersion2);
    msg.AppendToString(&raw);
    raw += HmacSha256(key_, raw).substr(0, kMacBytes);
  }
  return Base64UrlEncode(raw);
}

StatusOr<Position> SessionCodec::Decode(std::string_view token) const {
  if (token.size() > kMaxTokenChars) {
    return Status::InvalidArgument("session token is longer than any this cluster issues");
  }
  std::optional<std::string> raw = Base64UrlDecode(token);
  if (!raw) return Status::InvalidArgument("session token is not base64url");
  if (raw->size() < 1 + kMacBytes || ((*raw)[0] != kVersion1 && (*raw)[0] != kVersion2)) {
    return Status::InvalidArgument("session token is truncated or of an unknown version");
  }
  std::string_view body(raw->data(), raw->size() - kMacBytes);
  std::string_view mac(raw->data() + body.size(), kMacBytes);
  const bool v1 = (*raw)[0] == kVersion1;
  std::string expected = HmacSha256(v1 ? key_v1_ : key_, body);
  if (!memeql_sec(expected.data(), mac.data(), kMacBytes)) {
    return Status::InvalidArgument(
        "session token was not issued by this cluster (forged, altered or truncated)");
  }
  body.remove_prefix(1);
  if (v1) return DecodeV1(body);
  pb::SessionPositionV2 msg;
  if (!msg.ParseFromArray(body.data(), static_cast<int>(body.size())) ||
      static_cast<size_t>(msg.entry_size()) > kMaxTokenRegions) {
    return Status::InvalidArgument("session token's body is malformed");
  }
  Position p;
  p.reserve(static_cast<size_t>(msg.entry_size()));
  for (const pb::SessionEntry& e : msg.entry()) {
    if (!IsRegionName(e.region()) || e.seq() == 0 ||
        (!p.empty() && !(p.back().region < e.region()))) {
      return Status::InvalidArgument("session token's body is malformed");
    }
    p.push_back({e.region(), {e.epoch(), e.seq()}});
  }
  return p;
}

StatusOr<Position> SessionCodec::DecodeV1(std::string_view body) const {
  pb::SessionPosition msg;
  if (!msg.ParseFromArray(body.data(), static_cast<int>(body.size())) ||
      static_cast<size_t>(msg.epoch_size()) != configured_.size() ||
      static_cast<size_t>(msg.seq_size()) != configured_.size()) {
    return Status::InvalidArgument("session token does not match this cluster's regions");
  }
  Position p;
  for (size_t i = 0; i < configured_.size(); ++i) {
    uint64_t seq = msg.seq(static_cast<int>(i));
    if (seq != 0) p.push_back({configured_[i], {msg.epoch(static_cast<int>(i)), seq}});
  }
  return p;
}

}  // namespace edgestate::consistency
