// TLS helpers shared by the client port (http/tls.h) and the peer links (replication/tls.h).
#pragma once

// clang-format off
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.
// clang-format on
#include <boost/asio/ssl/context.hpp>
#include <string>
#include <string_view>

#include "common/status.h"

namespace edgestate::net {

// The oldest queued OpenSSL error as text (and clears the queue); "unknown OpenSSL error"
// when none is queued.
std::string OpenSslError();

// Makes `ctx` present `cert_file` (PEM chain, leaf first) with `key_file` (PEM private key).
// InvalidArgument naming the file and `what` ("TLS", "peer TLS") when one cannot be read or
// parsed, or when the key does not belong to the certificate.
Status UseCertificate(boost::asio::ssl::context* ctx, const std::string& cert_file,
                      const std::string& key_file, std::string_view what);

}  // namespace edgestate::net
