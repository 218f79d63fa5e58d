#include "http/server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.
#include <vector>

#include "common/strings.h"

namespace edgestate::http {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// Echoes the target in the body. "/defer" answers later from another thread, "/big" answers
// with a 4 MiB body.
class FakeHandler : public Handler {
 public:
  ~FakeHandler() override { JoinAll(); }

  // Waits for every deferred response to have been delivered (and its Responder destroyed).
  void JoinAll() {
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

  std::optional<Response> Handle(const Request& req,
                                 const std::function<Responder()>& defer) override {
    requests_.fetch_add(1);
    Response r;
    if (req.target == "/big") {
      r.body.assign(4 << 20, 'x');
      return r;
    }
    r.body = std::string(req.method) + " " + std::string(req.target) + " " + std::string(req.body);
    if (req.target != "/defer") return r;
    Responder respond = defer();
    std::lock_guard lock(mu_);
    threads_.emplace_back([respond = std::move(respond), r = std::move(r)]() mutable {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      respond(std::move(r));
    });
    return std::nullopt;
  }

  int requests() const { return requests_.load(); }

 private:
  std::atomic<int> requests_{0};
  std::mutex mu_;
  std::vector<std::thread> threads_;
};

class ServerTest : public ::testing::Test {
 protected:
  void StartServer(HttpServerOptions options) {
    options.listen_address = "127.0.0.1";
    options.port = 0;
    server_ = std::make_unique<HttpServer>(options, &handler_, &metrics_);
    ASSERT_TRUE(server_->Start().ok());
  }

  // Responders must not outlive the server: deliver them all before destroying it.
  void TearDown() override {
    handler_.JoinAll();
    server_.reset();
  }

  tcp::socket Connect() {
    tcp::socket s(ioc_);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port()));
    return s;
  }

  // Reads until `count` complete responses (each with Content-Length) have arrived, or EOF.
  static std::vector<std::string> ReadResponses(tcp::socket& s, size_t count) {
    std::vector<std::string> bodies;
    std::string data;
    boost::system::error_code ec;
    while (bodies.size() < count) {
      size_t end = data.find("\r\n\r\n");
      if (end != std::string::npos) {
        size_t cl = data.find("Content-Length: ");
        size_t len = std::stoul(data.substr(cl + 16));
        if (data.size() >= end + 4 + len) {
          bodies.push_back(data.substr(end + 4, len));
          data.erase(0, end + 4 + len);
          continue;
        }
      }
      char buf[65536];
      size_t n = s.read_some(asio::buffer(buf), ec);
      if (ec) break;
      data.append(buf, n);
    }
    return bodies;
  }

  bool WaitForConnections(size_t n, std::chrono::milliseconds limit) {
    auto deadline = Clock::now() + limit;
    while (server_->active_connections() != n && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return server_->active_connections() == n;
  }

  // True when the server closed the connection (EOF or reset) within `limit`.
  static bool ClosedWithin(tcp::socket& s, std::chrono::milliseconds limit) {
    auto deadline = Clock::now() + limit;
    s.non_blocking(true);
    char buf[256];
    while (Clock::now() < deadline) {
      boost::system::error_code ec;
      s.read_some(asio::buffer(buf), ec);
      if (ec == asio::error::would_block) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        continue;
      }
      if (ec) return true;
    }
    return false;
  }

  asio::io_context ioc_;
  MetricsRegistry registry_;
  HttpMetrics metrics_{&registry_};
  FakeHandler handler_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(ServerTest, PipelinedRequestsAreAnsweredInOrder) {
  StartServer({});
  tcp::socket s = Connect();
  std::string batch;
  for (int i = 0; i < 20; ++i) {
    std::string target = i % 3 == 0 ? "/defer" : "/r" + std::to_string(i);
    batch += "POST " + target + " HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n" +
             std::to_string(10 + i);
  }
  asio::write(s, asio::buffer(batch));
  std::vector<std::string> bodies = ReadResponses(s, 20);
  ASSERT_EQ(bodies.size(), 20u);
  for (int i = 0; i < 20; ++i) {
    std::string target = i % 3 == 0 ? "/defer" : "/r" + std::to_string(i);
    EXPECT_EQ(bodies[i], "POST " + target + " " + std::to_string(10 + i));
  }
}

// Bodies are read in pieces as large as the header announces, with room for the next request
// beyond them; a large body's buffer is given back before the next request. Requests of every
// size, pipelined in one write or sent one by one, still arrive whole and in order.
TEST_F(ServerTest, BodiesOfEverySizeArriveWholeAlsoPipelined) {
  StartServer({});
  const std::vector<size_t> sizes = {1, 1024, 511, 512, 513, 70000, 0, 300000, 3, 65536, 1000};
  auto body_of = [](size_t i, size_t n) {
    std::string b(n, 'a');
    for (size_t k = 0; k < n; ++k) b[k] = static_cast<char>('a' + (i * 7 + k) % 26);
    return b;
  };
  auto request = [&](size_t i) {
    std::string b = body_of(i, sizes[i]);
    return "POST /b" + std::to_string(i) +
           " HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(b.size()) + "\r\n\r\n" + b;
  };
  auto expected = [&](size_t i) {
    return "POST /b" + std::to_string(i) + " " + body_of(i, sizes[i]);
  };
  {
    tcp::socket s = Connect();
    std::string batch;
    for (size_t i = 0; i < sizes.size(); ++i) batch += request(i);
    asio::write(s, asio::buffer(batch));
    std::vector<std::string> bodies = ReadResponses(s, sizes.size());
    ASSERT_EQ(bodies.size(), sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) EXPECT_EQ(bodies[i], expected(i)) << i;
  }
  tcp::socket s = Connect();
  for (size_t i = 0; i < sizes.size(); ++i) {
    asio::write(s, asio::buffer(request(i)));
    std::vector<std::string> bodies = ReadResponses(s, 1);
    ASSERT_EQ(bodies.size(), 1u) << i;
    EXPECT_EQ(bodies[0], expected(i)) << i;
  }
}

TEST_F(ServerTest, ResponsesCarryTheDate) {
  StartServer({});
  tcp::socket s = Connect();
  asio::write(s, asio::buffer(std::string("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")));
  std::string head;
  char c;
  while (head.find("\r\n\r\n") == std::string::npos) {
    asio::read(s, asio::buffer(&c, 1));
    head.push_back(c);
  }
  size_t at = head.find("\r\nDate: ");
  ASSERT_NE(at, std::string::npos) << head;
  std::string date = head.substr(at + 8, head.find("\r\n", at + 2) - at - 8);
  // Within a few seconds of now, in IMF-fixdate form.
  int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  bool near = false;
  for (int64_t t = now - 3; t <= now + 1; ++t) near = near || FormatHttpDate(t) == date;
  EXPECT_TRUE(near) << date;
}

TEST_F(ServerTest, ExpectContinueGetsAnInterimResponse) {
  StartServer({});
  tcp::socket s = Connect();
  asio::write(
      s, asio::buffer(std::string(
             "POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")));
  // The client holds the body until it sees the interim response.
  std::string interim(25, '\0');
  asio::read(s, asio::buffer(interim));
  EXPECT_EQ(interim, "HTTP/1.1 100 Continue\r\n\r\n");
  asio::write(s, asio::buffer(std::string("hello")));
  std::vector<std::string> bodies = ReadResponses(s, 1);
  ASSERT_EQ(bodies.size(), 1u);
  EXPECT_EQ(bodies[0], "POST /e hello");
  // A body over the limit gets 413 instead, without a 100.
  tcp::socket t = Connect();
  asio::write(t, asio::buffer(std::string("POST /e HTTP/1.1\r\nExpect: 100-continue\r\n"
                                          "Content-Length: 10000000\r\n\r\n")));
  std::string head(12, '\0');
  asio::read(t, asio::buffer(head));
  EXPECT_EQ(head, "HTTP/1.1 413");
}

TEST_F(ServerTest, RequestArrivingByteByByte) {
  StartServer({});
  tcp::socket s = Connect();
  s.set_option(tcp::no_delay(true));
  std::string req = "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
  for (char c : req) {
    asio::write(s, asio::buffer(&c, 1));
    std::this_thread::sleep_for(std::chrono::microseconds(300));
  }
  std::vector<std::string> bodies = ReadResponses(s, 1);
  ASSERT_EQ(bodies.size(), 1u);
  EXPECT_EQ(bodies[0], "POST /slow hello");
}

TEST_F(ServerTest, HalfClosedClientStillGetsItsResponse) {
  StartServer({});
  tcp::socket s = Connect();
  asio::write(s, asio::buffer(std::string("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")));
  s.shutdown(tcp::socket::shutdown_send);
  std::vector<std::string> bodies = ReadResponses(s, 1);
  ASSERT_EQ(bodies.size(), 1u);
  EXPECT_EQ(bodies[0], "GET /a ");
  EXPECT_TRUE(ClosedWithin(s, std::chrono::seconds(20)));
}

TEST_F(ServerTest, IdleConnectionIsClosedNearTheRequestTimeout) {
  HttpServerOptions o;
  o.request_timeout = std::chrono::milliseconds(400);
  StartServer(o);
  tcp::socket s = Connect();
  auto start = Clock::now();
  ASSERT_TRUE(ClosedWithin(s, std::chrono::seconds(20)));
  auto took = Clock::now() - start;
  // Not before the timeout (less the sweep's tenth); and by the timeout, not by the 15 s default
  // or never: the upper bound is ten times the timeout so that only a real fault crosses it.
  EXPECT_GE(took, std::chrono::milliseconds(300));
  EXPECT_LE(took, std::chrono::milliseconds(4000));
}

TEST_F(ServerTest, ActiveClientIsNotCutByTheRequestTimeout) {
  HttpServerOptions o;
  o.request_timeout = std::chrono::milliseconds(1000);
  StartServer(o);
  tcp::socket s = Connect();
  // A request every 100 ms for 3 s, three times the timeout: each one restarts the clock. The gap
  // between requests is a tenth of the timeout, so a stalled test thread does not look idle.
  for (int i = 0; i < 30; ++i) {
    asio::write(s, asio::buffer(std::string("GET /k HTTP/1.1\r\nHost: x\r\n\r\n")));
    ASSERT_EQ(ReadResponses(s, 1).size(), 1u) << i;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

TEST_F(ServerTest, SlowHeaderIsCutAtTheRequestTimeout) {
  HttpServerOptions o;
  o.request_timeout = std::chrono::milliseconds(400);
  StartServer(o);
  tcp::socket s = Connect();
  auto start = Clock::now();
  asio::write(s, asio::buffer(std::string("GET /a HTTP/1.1\r\n")));
  // A header line every 50 ms for up to 20 s. Were each line to restart the clock, the connection
  // would stay open to the end; the bound is ten times the timeout.
  bool closed = false;
  while (!closed && Clock::now() - start < std::chrono::seconds(20)) {
    boost::system::error_code ec;
    asio::write(s, asio::buffer(std::string("X-Slow: 1\r\n")), ec);
    closed = ec || ClosedWithin(s, std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(closed);
  EXPECT_LE(Clock::now() - start, std::chrono::milliseconds(4000));
  EXPECT_EQ(handler_.requests(), 0);
}

TEST_F(ServerTest, LargeResponseReachesASlowReader) {
  StartServer({});
  tcp::socket s = Connect();
  asio::write(s, asio::buffer(std::string("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // Let the socket buffers fill.
  std::vector<std::string> bodies = ReadResponses(s, 1);
  ASSERT_EQ(bodies.size(), 1u);
  EXPECT_EQ(bodies[0].size(), 4u << 20);
}

TEST_F(ServerTest, AReaderThatNeverReadsIsCutAtTheWriteTimeout) {
  HttpServerOptions o;
  o.write_timeout = std::chrono::milliseconds(300);
  StartServer(o);
  tcp::socket s = Connect();
  s.set_option(asio::socket_base::receive_buffer_size(4096));
  asio::write(s, asio::buffer(std::string("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")));
  ASSERT_TRUE(WaitForConnections(1, std::chrono::seconds(20)));
  // 4 MiB cannot fit in the socket buffers; the server gives up on the write and closes.
  auto start = Clock::now();
  EXPECT_TRUE(WaitForConnections(0, std::chrono::seconds(20)));
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(150));
}

TEST_F(ServerTest, LingeringCloseIsBoundedInTime) {
  StartServer({});
  tcp::socket s = Connect();
  ASSERT_TRUE(WaitForConnections(1, std::chrono::seconds(20)));
  asio::write(s, asio::buffer(std::string("GARBAGE\r\n\r\n")));
  // The client keeps sending after its error response; the server drains for about 2 s, then
  // closes. A drain that follows the client would last the whole 30 s of sending.
  auto start = Clock::now();
  while (server_->active_connections() != 0 && Clock::now() - start < std::chrono::seconds(30)) {
    boost::system::error_code ec;
    asio::write(s, asio::buffer(std::string(64, 'x')), ec);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(server_->active_connections(), 0u);
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(1500));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(15));
}

TEST_F(ServerTest, LimitsAndMalformedRequests) {
  HttpServerOptions o;
  o.max_header_bytes = 1024;
  o.max_body_bytes = 2048;
  StartServer(o);
  struct Case {
    std::string request;
    std::string status;
  };
  std::vector<Case> cases = {
      {"GET /a HTTP/1.1\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n", "431"},
      {"POST /a HTTP/1.1\r\nContent-Length: 4096\r\n\r\n" + std::string(4096, 'b'), "413"},
      {"GARBAGE\r\n\r\n", "400"},
      {"GET /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "400"},
  };
  for (const Case& c : cases) {
    tcp::socket s = Connect();
    boost::system::error_code ec;
    asio::write(s, asio::buffer(c.request), ec);
    std::string got;
    char buf[4096];
    for (;;) {
      size_t n = s.read_some(asio::buffer(buf), ec);
      if (ec) break;
      got.append(buf, n);
    }
    EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 " + c.status) << c.request.substr(0, 40);
    EXPECT_NE(got.find("Connection: close"), std::string::npos);
    EXPECT_NE(got.find("{\"error\":{\"code\":"), std::string::npos);
  }
  EXPECT_EQ(handler_.requests(), 0);
}

TEST_F(ServerTest, ShutdownAnswersInFlightDeferredRequests) {
  StartServer({});
  tcp::socket s = Connect();
  asio::write(s, asio::buffer(std::string("GET /defer HTTP/1.1\r\nHost: x\r\n\r\n")));
  auto deadline = Clock::now() + std::chrono::seconds(20);
  while (handler_.requests() == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(handler_.requests(), 1);
  std::thread stopper([this] { server_->Shutdown(); });
  std::vector<std::string> bodies = ReadResponses(s, 1);
  s.close();
  stopper.join();
  ASSERT_EQ(bodies.size(), 1u);
  EXPECT_EQ(bodies[0], "GET /defer ");
}

// Mutated requests, sent in random pieces: every connection ends with responses that are
// well-formed HTTP/1.1 (or a close), and the server keeps serving afterwards.
TEST_F(ServerTest, MutatedRequestsNeverBreakTheServer) {
  HttpServerOptions o;
  o.max_header_bytes = 2048;
  o.max_body_bytes = 4096;
  o.request_timeout = std::chrono::milliseconds(300);
  StartServer(o);
  const std::vector<std::string> seeds = {
      "GET /read HTTP/1.1\r\nHost: x\r\n\r\n",
      "POST /v1/counters/a/increment HTTP/1.1\r\nContent-Length: 12\r\n\r\n{\"delta\": 5}",
      "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
      "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
  };
  std::mt19937 rng(20261127);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  for (int iter = 0; iter < 2000; ++iter) {
    std::string req = seeds[pick(seeds.size())];
    int mutations = static_cast<int>(pick(4));
    for (int m = 0; m < mutations && !req.empty(); ++m) {
      switch (pick(4)) {
        case 0:  // Flip a byte.
          req[pick(req.size())] = static_cast<char>(pick(256));
          break;
        case 1:  // Truncate.
          req.resize(pick(req.size()));
          break;
        case 2:  // Insert junk, sometimes a lot of it.
          req.insert(pick(req.size()), std::string(pick(2) ? pick(8) + 1 : pick(6000), 'z'));
          break;
        case 3:  // Duplicate a piece (pipelining, repeated headers).
          req += req.substr(pick(req.size()));
          break;
      }
    }
    tcp::socket s = Connect();
    boost::system::error_code ec;
    for (size_t off = 0; off < req.size() && !ec;) {
      size_t n = std::min(req.size() - off, pick(64) + 1);
      asio::write(s, asio::buffer(req.data() + off, n), ec);
      off += n;
    }
    s.shutdown(tcp::socket::shutdown_send, ec);
    std::string got;
    char buf[8192];
    auto deadline = Clock::now() + std::chrono::seconds(30);
    for (;;) {
      size_t n = s.read_some(asio::buffer(buf), ec);
      if (ec) break;
      got.append(buf, n);
      ASSERT_LT(Clock::now(), deadline) << "iteration " << iter;
    }
    if (!got.empty()) {
      EXPECT_EQ(got.substr(0, 7), "HTTP/1.") << "iteration " << iter;
    }
  }
  tcp::socket s = Connect();
  asio::write(s, asio::buffer(std::string("GET /still HTTP/1.1\r\nHost: x\r\n\r\n")));
  std::vector<std::string> bodies = ReadResponses(s, 1);
  ASSERT_EQ(bodies.size(), 1u);
  EXPECT_EQ(bodies[0], "GET /still ");
}

}  // namespace
}  // namespace edgestate::http
