#include "consistency/session_token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cctype>

#include "consistency/session.pb.h"

namespace edgestate::consistency {
namespace {

constexpr char kVersion = 1;
constexpr size_t kMacBytes = 8;

std::string HmacSha256(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

// OpenSSL's base64 (standard alphabet, padded) translated to and from base64url (RFC 4648 5)
// without padding.
std::string Base64UrlEncode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return out;
}

std::optional<std::string> Base64UrlDecode(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::string std_text(text);
  for (char& c : std_text) {
    if (c == '-') {
      c = '+';
    } else if (c == '_') {
      c = '/';
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
      return std::nullopt;  // Also refuses '+', '/' and '=': tokens are unpadded base64url.
    }
  }
  size_t pad = (4 - std_text.size() % 4) % 4;
  std_text.append(pad, '=');
  std::string out(std_text.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(std_text.data()),
                          static_cast<int>(std_text.size()));
  if (n < 0 || static_cast<size_t>(n) < pad) return std::nullopt;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

}  // namespace

Position Merge(const Position& a, const Position& b) {
  Position out(std::max(a.size(), b.size()));
  for (size_t i = 0; i < out.size(); ++i) {
    OriginPosition x = i < a.size() ? a[i] : OriginPosition{};
    OriginPosition y = i < b.size() ? b[i] : OriginPosition{};
    if (x.epoch != y.epoch) {
      out[i] = x.epoch > y.epoch ? x : y;
    } else {
      out[i] = {x.epoch, std::max(x.seq, y.seq)};
    }
  }
  return out;
}

Coverage Covers(const Position& node, const Position& token) {
  Coverage c;
  for (size_t i = 0; i < token.size(); ++i) {
    const OriginPosition& want = token[i];
    if (want.seq == 0) continue;  // Nothing of that region seen: nothing to wait for.
    OriginPosition have = i < node.size() ? node[i] : OriginPosition{};
    if (have.epoch > want.epoch) {
      c.lost.push_back(i);
    } else if (have.epoch < want.epoch || have.seq < want.seq) {
      c.missing.push_back(i);
    }
  }
  return c;
}

SessionCodec::SessionCodec(std::vector<std::string> regions, std::string_view secret)
    : regions_(std::move(regions)) {
  std::sort(regions_.begin(), regions_.end());
  regions_.erase(std::unique(regions_.begin(), regions_.end()), regions_.end());
  // The key binds the secret to this cluster's region list, so a token of another cluster
  // (another secret, or other regions at the same positions) fails its MAC.
  std::string context = "edgestate session token v1";
  for (const std::string& r : regions_) context.append(1, '\0').append(r);
  key_ = HmacSha256(secret, context);
}

std::optional<size_t> SessionCodec::IndexOf(std::string_view region) const {
  auto it = std::lower_bound(regions_.begin(), regions_.end(), region);
  if (it == regions_.end() || *it != region) return std::nullopt;
  return static_cast<size_t>(it - regions_.begin());
}

std::string SessionCodec::Mac(std::string_view data) const {
  return HmacSha256(key_, data).substr(0, kMacBytes);
}

std::string SessionCodec::Encode(const Position& p) const {
  pb::SessionPosition msg;
  for (const OriginPosition& o : p) {
    msg.add_epoch(o.epoch);
    msg.add_seq(o.seq);
  }
  std::string raw(1, kVersion);
  msg.AppendToString(&raw);
  raw += Mac(raw);
  return Base64UrlEncode(raw);
}

StatusOr<Position> SessionCodec::Decode(std::string_view token) const {
  if (token.size() > kMaxTokenChars) {
    return Status::InvalidArgument("session token is longer than any this cluster issues");
  }
  std::optional<std::string> raw = Base64UrlDecode(token);
  if (!raw) return Status::InvalidArgument("session token is not base64url");
  if (raw->size() < 1 + kMacBytes || (*raw)[0] != kVersion) {
    return Status::InvalidArgument("session token is truncated or of an unknown version");
  }
  std::string_view body(raw->data(), raw->size() - kMacBytes);
  std::string_view mac(raw->data() + body.size(), kMacBytes);
  std::string expected = Mac(body);
  if (CRYPTO_memcmp(expected.data(), mac.data(), kMacBytes) != 0) {
    return Status::InvalidArgument(
        "session token was not issued by this cluster (forged, altered or truncated)");
  }
  pb::SessionPosition msg;
  if (!msg.ParseFromArray(body.data() + 1, static_cast<int>(body.size() - 1)) ||
      static_cast<size_t>(msg.epoch_size()) != regions_.size() ||
      static_cast<size_t>(msg.seq_size()) != regions_.size()) {
    return Status::InvalidArgument("session token does not match this cluster's regions");
  }
  Position p(regions_.size());
  for (size_t i = 0; i < p.size(); ++i)
    p[i] = {msg.epoch(static_cast<int>(i)), msg.seq(static_cast<int>(i))};
  return p;
}

}  // namespace edgestate::consistency
