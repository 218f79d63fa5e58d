#include "net/net.h"

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.

namespace edgestate::net {
namespace {

TEST(FindFreePortRangeTest, ConsecutivePortsBelowTheEphemeralRangeThatCanBeBound) {
  uint16_t base = FindFreePortRange(50);
  ASSERT_NE(base, 0);
  EXPECT_GE(base, 20000);
  EXPECT_LT(base + 50, 32768);
  boost::asio::io_context ioc;
  for (int i = 0; i < 50; ++i) {
    boost::asio::ip::tcp::acceptor a(ioc);
    auto port = Listen(a, "127.0.0.1", static_cast<uint16_t>(base + i), "test");
    ASSERT_TRUE(port.ok()) << port.status().ToString();
    EXPECT_EQ(*port, base + i);
  }
}

TEST(ListenTest, BadAddressAndTakenPort) {
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::acceptor a(ioc), b(ioc), c(ioc);
  EXPECT_EQ(Listen(a, "not-an-ip", 0, "test").status().code(), StatusCode::kInvalidArgument);
  auto port = Listen(b, "127.0.0.1", 0, "test");
  ASSERT_TRUE(port.ok());
  EXPECT_EQ(Listen(c, "127.0.0.1", *port, "test").status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace edgestate::net
