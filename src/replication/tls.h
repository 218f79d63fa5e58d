// PeerTls: the TLS 1.3 contexts that encrypt and authenticate the links between regions
// (docs/security.md, "Peer links").
//
// Three modes:
//  - kPsk (the default): TLS 1.3 with an external pre-shared key derived from the cluster
//    secret (HMAC-SHA256 over a fixed label), key exchange psk_dhe_ke (ephemeral ECDHE, so a
//    later leak of the secret does not decrypt recorded traffic). No certificates: a peer
//    without the secret fails the handshake (its PSK binder does not verify) and can neither
//    read nor inject a byte;
//  - kCertificates: TLS 1.3 with mutual certificate verification: each node presents `cert_file`
//    (with `key_file`) and accepts only peers whose chain ends at a CA in `ca_file`. Any
//    certificate that CA signed is a member of the cluster: use a CA of the cluster's own;
//  - kPlaintext: no TLS (--peer-insecure-plaintext). Both ends must agree; a plaintext node and
//    a TLS node never complete a handshake.
// In every mode the edgestate handshake (HMAC challenge over the cluster secret, auth.h) still
// runs inside the channel and names the peer's region.
//
// Thread-safety: immutable after Create; the contexts may be used from any thread (OpenSSL's
// SSL_CTX is safe to share once configured).
#pragma once

// clang-format off
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.
// clang-format on
#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace edgestate::replication {

struct PeerTlsOptions {
  enum class Mode { kPsk, kCertificates, kPlaintext };
  Mode mode = Mode::kPsk;
  std::string cert_file;  // kCertificates: PEM chain, leaf first.
  std::string key_file;   // kCertificates: PEM private key of the leaf.
  std::string ca_file;    // kCertificates: PEM CA certificates that sign members.
};

// "psk", "certificates" or "plaintext" (for /v1/cluster and the log).
std::string_view PeerTlsModeName(PeerTlsOptions::Mode mode);

// The 32-byte TLS 1.3 external PSK for `cluster_secret`. Exposed for tests.
std::string DerivePeerPsk(std::string_view cluster_secret);

class PeerTls {
 public:
  // InvalidArgument naming the file when a certificate, key or CA cannot be loaded, or when the
  // key does not match the certificate; InvalidArgument for an empty `cluster_secret` in kPsk
  // (the key's source; unused in the other modes).
  static StatusOr<std::unique_ptr<PeerTls>> Create(const PeerTlsOptions& options,
                                                   std::string_view cluster_secret);
  ~PeerTls();

  PeerTlsOptions::Mode mode() const { return mode_; }
  // The contexts for the connecting and the accepting side; nullptr in kPlaintext.
  boost::asio::ssl::context* client() { return client_.get(); }
  boost::asio::ssl::context* server() { return server_.get(); }

 private:
  PeerTls() = default;

  PeerTlsOptions::Mode mode_ = PeerTlsOptions::Mode::kPsk;
  std::string psk_;  // kPsk: read by the OpenSSL callbacks through the contexts' ex_data.
  std::unique_ptr<boost::asio::ssl::context> client_;
  std::unique_ptr<boost::asio::ssl::context> server_;
};

}  // namespace edgestate::replication
