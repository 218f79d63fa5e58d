#include "net/net.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <boost/asio/socket_base.hpp>

namespace edgestate::net {

StatusOr<uint16_t> Listen(boost::asio::ip::tcp::acceptor& acceptor, const std::string& host,
                          uint16_t port, const std::string& what) {
  namespace asio = boost::asio;
  boost::system::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return Status::InvalidArgument(fmt::format("{}: bad listen address {}", what, host));
  asio::ip::tcp::endpoint endpoint(address, port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status::Unavailable(
        fmt::format("{}: cannot listen on {}:{}: {}", what, host, port, ec.message()));
  }
  return acceptor.local_endpoint().port();
}

void RunLoop(boost::asio::io_context& ioc, const char* thread_name) {
  for (;;) {
    try {
      ioc.run();
      return;
    } catch (const std::exception& e) {
      spdlog::error("{} thread caught: {}", thread_name, e.what());
    }
  }
}

}  // namespace edgestate::net
