#include "http/tls.h"

#include <openssl/ssl.h>

#include "net/tls.h"

namespace edgestate::http {

namespace ssl = boost::asio::ssl;

StatusOr<std::shared_ptr<ssl::context>> LoadServerTls(const std::string& cert_file,
                                                      const std::string& key_file) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* c = ctx->native_handle();
  // TLS 1.2 suites: ECDHE with AES-GCM or ChaCha20-Poly1305; TLS 1.3's are all AEAD.
  if (SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_cipher_list(c, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1) {
    return Status::Internal("cannot configure TLS: " + net::OpenSslError());
  }
  SSL_CTX_set_options(
      c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  if (Status s = net::UseCertificate(ctx.get(), cert_file, key_file, "TLS"); !s.ok()) return s;
  return ctx;
}

}  // namespace edgestate::http
