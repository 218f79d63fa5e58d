// Small Asio helpers shared by the HTTP server, the replication links and the WAN emulator.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.

#include "common/status.h"

namespace edgestate::net {

// Opens `acceptor` (constructed on its io_context, not yet open), sets SO_REUSEADDR, binds
// host:port (port 0: a free port) and listens. Returns the bound port. InvalidArgument when
// `host` is not an IP address; Unavailable, naming `what` and the address, when it cannot bind.
StatusOr<uint16_t> Listen(boost::asio::ip::tcp::acceptor& acceptor, const std::string& host,
                          uint16_t port, const std::string& what);

// The first of `n` consecutive TCP ports on 127.0.0.1 that were free a moment ago (bound and
// released), or 0 when none was found. The ports lie in 20000..30000+n, below the kernel's
// ephemeral range, so no bind(0) or outgoing connection takes them before the caller binds.
uint16_t FindFreePortRange(int n);

// Names the calling thread `thread_name` (common/thread_name.h) and runs `ioc` on it until it
// stops. A handler that throws (bad_alloc, say) is logged with the name and the loop goes on
// serving the other handlers.
void RunLoop(boost::asio::io_context& ioc, std::string_view thread_name);

// Ends a loop that `thread` runs with RunLoop, after the caller has posted what closes its
// sockets and cancels its timers: waits until the loop runs out of work by itself (every
// coroutine ended and released what it held), however long a busy machine takes to get there,
// up to `grace`; then stops the loop (whatever is still suspended is abandoned) and joins.
// REQUIRES: no work guard holds `ioc`.
void StopLoop(boost::asio::io_context& ioc, std::thread& thread, std::chrono::milliseconds grace);

}  // namespace edgestate::net
