#include "net/tls.h"

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

namespace edgestate::net {

std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

Status UseCertificate(boost::asio::ssl::context* ctx, const std::string& cert_file,
                      const std::string& key_file, std::string_view what) {
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(cert_file, ec);
  if (ec) {
    ERR_clear_error();
    return Status::InvalidArgument(
        fmt::format("{} certificate {}: {}", what, cert_file, ec.message()));
  }
  ctx->use_private_key_file(key_file, boost::asio::ssl::context::pem, ec);
  if (ec) {
    ERR_clear_error();
    return Status::InvalidArgument(fmt::format("{} key {}: {}", what, key_file, ec.message()));
  }
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    ERR_clear_error();
    return Status::InvalidArgument(
        fmt::format("{} key {} does not match certificate {}", what, key_file, cert_file));
  }
  return Status::Ok();
}

}  // namespace edgestate::net
