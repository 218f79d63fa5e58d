#include "net/net.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/socket_base.hpp>
#include <vector>

#include "common/thread_name.h"

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

uint16_t FindFreePortRange(int n) {
  boost::asio::io_context ioc;
  for (int attempt = 0; attempt < 200; ++attempt) {
    auto base = static_cast<uint16_t>(20000 + (::getpid() * 7919 + attempt * 104729) % 10000);
    std::vector<boost::asio::ip::tcp::acceptor> held;
    bool ok = true;
    for (int i = 0; i < n && ok; ++i) {
      boost::asio::ip::tcp::acceptor a(ioc);
      boost::system::error_code ec;
      a.open(boost::asio::ip::tcp::v4(), ec);
      if (!ec) {
        a.bind({boost::asio::ip::address_v4::loopback(), static_cast<uint16_t>(base + i)}, ec);
      }
      ok = !ec;
      held.push_back(std::move(a));
    }
    if (ok) return base;
  }
  return 0;
}

void RunLoop(boost::asio::io_context& ioc, std::string_view thread_name) {
  NameThisThread(thread_name);
  for (;;) {
    try {
      ioc.run();
      return;
    } catch (const std::exception& e) {
      spdlog::error("{} thread caught: {}", thread_name, e.what());
    }
  }
}

void StopLoop(boost::asio::io_context& ioc, std::thread& thread, std::chrono::milliseconds grace) {
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (!ioc.stopped() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (!ioc.stopped()) spdlog::warn("a loop still had work {} ms after shutdown", grace.count());
  ioc.stop();
  thread.join();
}

}  // namespace edgestate::net
