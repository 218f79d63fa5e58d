// TLS on the client port (docs/security.md, "Client connections"), for deployments without a
// terminating proxy: `--tls-cert` and `--tls-key`, reloaded on SIGHUP.
#pragma once

// clang-format off
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.
// clang-format on
#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

#include "common/status.h"

namespace edgestate::http {

// A server context presenting `cert_file` (PEM chain, leaf first) with `key_file`: TLS 1.2
// and 1.3, forward-secret AEAD suites only, session tickets on, OpenSSL's buffers released
// while a connection is idle. InvalidArgument naming the file when one cannot be read or
// parsed, or when the key does not belong to the certificate. The context is immutable once
// returned and may be shared by every I/O thread.
StatusOr<std::shared_ptr<boost::asio::ssl::context>> LoadServerTls(const std::string& cert_file,
                                                                   const std::string& key_file);

}  // namespace edgestate::http
