#include "replication/tls.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>

#include <cstring>

#include "net/tls.h"

namespace edgestate::replication {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;

namespace {

// The identity the client names for the external PSK (it travels in clear; it is not secret).
constexpr std::string_view kPskIdentity = "edgestate/1 peer psk";
// The only suite: its hash (SHA-256) is the PSK's.
constexpr unsigned char kAes128GcmSha256[] = {0x13, 0x01};

// The SSL_CTX ex_data slot holding the context's PSK (Asio keeps its own callbacks in the
// app-data slot, index 0, so that one is taken).
int PskIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

const std::string& PskOf(SSL* ssl) {
  return *static_cast<const std::string*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), PskIndex()));
}

// A resumption-style session that carries the external PSK. nullptr when OpenSSL fails.
SSL_SESSION* NewPskSession(SSL* ssl) {
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kAes128GcmSha256);
  if (cipher == nullptr) return nullptr;
  SSL_SESSION* s = SSL_SESSION_new();
  if (s == nullptr) return nullptr;
  const std::string& psk = PskOf(ssl);
  if (SSL_SESSION_set1_master_key(s, reinterpret_cast<const unsigned char*>(psk.data()),
                                  psk.size()) != 1 ||
      SSL_SESSION_set_cipher(s, cipher) != 1 ||
      SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION) != 1) {
    SSL_SESSION_free(s);
    return nullptr;
  }
  return s;
}

// Client: offers the PSK (OpenSSL takes ownership of *sess).
int UsePsk(SSL* ssl, const EVP_MD* md, const unsigned char** id, size_t* id_len,
           SSL_SESSION** sess) {
  SSL_SESSION* s = NewPskSession(ssl);
  if (s == nullptr) return 0;
  if (md != nullptr && md != SSL_CIPHER_get_handshake_digest(SSL_SESSION_get0_cipher(s))) {
    // After a HelloRetryRequest for another hash: offer nothing (the handshake then fails).
    SSL_SESSION_free(s);
    *sess = nullptr;
    return 1;
  }
  *id = reinterpret_cast<const unsigned char*>(kPskIdentity.data());
  *id_len = kPskIdentity.size();
  *sess = s;
  return 1;
}

// Server: the PSK for the identity the client named; none for any other identity.
int FindPsk(SSL* ssl, const unsigned char* identity, size_t identity_len, SSL_SESSION** sess) {
  if (identity_len != kPskIdentity.size() ||
      std::memcmp(identity, kPskIdentity.data(), identity_len) != 0) {
    *sess = nullptr;
    return 1;
  }
  *sess = NewPskSession(ssl);
  return *sess != nullptr ? 1 : 0;
}

// TLS 1.3 only, one suite, no tickets nor session cache (every link is a full handshake).
Status Restrict(ssl::context* ctx) {
  SSL_CTX* c = ctx->native_handle();
  if (SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_ciphersuites(c, "TLS_AES_128_GCM_SHA256") != 1 ||
      SSL_CTX_set_num_tickets(c, 0) != 1) {
    return Status::Internal("cannot configure TLS 1.3: " + net::OpenSslError());
  }
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  return Status::Ok();
}

Status LoadCertificates(ssl::context* ctx, const PeerTlsOptions& o) {
  if (Status s = net::UseCertificate(ctx, o.cert_file, o.key_file, "peer TLS"); !s.ok()) return s;
  boost::system::error_code ec;
  ctx->load_verify_file(o.ca_file, ec);
  if (ec) {
    return Status::InvalidArgument(fmt::format("peer TLS CA {}: {}", o.ca_file, ec.message()));
  }
  ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert, ec);
  if (ec) return Status::Internal("peer TLS verify mode: " + ec.message());
  return Status::Ok();
}

}  // namespace

std::string_view PeerTlsModeName(PeerTlsOptions::Mode mode) {
  switch (mode) {
    case PeerTlsOptions::Mode::kPsk:
      return "psk";
    case PeerTlsOptions::Mode::kCertificates:
      return "certificates";
    case PeerTlsOptions::Mode::kPlaintext:
      return "plaintext";
  }
  return "unknown";
}

std::string DerivePeerPsk(std::string_view cluster_secret) {
  static constexpr std::string_view kLabel = "edgestate/1 peer link tls 1.3 external psk";
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), cluster_secret.data(), static_cast<int>(cluster_secret.size()),
       reinterpret_cast<const unsigned char*>(kLabel.data()), kLabel.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

PeerTls::~PeerTls() = default;

StatusOr<std::unique_ptr<PeerTls>> PeerTls::Create(const PeerTlsOptions& options,
                                                   std::string_view cluster_secret) {
  std::unique_ptr<PeerTls> t(new PeerTls());
  t->mode_ = options.mode;
  if (options.mode == PeerTlsOptions::Mode::kPlaintext) return t;
  t->client_ = std::make_unique<ssl::context>(ssl::context::tls_client);
  t->server_ = std::make_unique<ssl::context>(ssl::context::tls_server);
  for (ssl::context* ctx : {t->client_.get(), t->server_.get()}) {
    if (Status s = Restrict(ctx); !s.ok()) return s;
  }
  if (options.mode == PeerTlsOptions::Mode::kPsk) {
    if (cluster_secret.empty()) {
      return Status::InvalidArgument("peer TLS with a pre-shared key needs a cluster secret");
    }
    t->psk_ = DerivePeerPsk(cluster_secret);
    for (ssl::context* ctx : {t->client_.get(), t->server_.get()}) {
      if (PskIndex() < 0 || SSL_CTX_set_ex_data(ctx->native_handle(), PskIndex(), &t->psk_) != 1) {
        return Status::Internal("cannot attach the peer PSK: " + net::OpenSslError());
      }
    }
    SSL_CTX_set_psk_use_session_callback(t->client_->native_handle(), UsePsk);
    SSL_CTX_set_psk_find_session_callback(t->server_->native_handle(), FindPsk);
    return t;
  }
  for (ssl::context* ctx : {t->client_.get(), t->server_.get()}) {
    if (Status s = LoadCertificates(ctx, options); !s.ok()) return s;
  }
  return t;
}

}  // namespace edgestate::replication
