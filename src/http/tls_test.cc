#include "http/tls.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.

#include "common/test_dir.h"
#include "http/server.h"
#include "net/test_certs.h"

namespace edgestate::http {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

class EchoHandler : public Handler {
 public:
  std::optional<Response> Handle(const Request& req, const std::function<Responder()>&) override {
    Response r;
    r.body = std::string(req.method) + " " + std::string(req.target);
    return r;
  }
};

class TlsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshTestDir();
    MakeSelfSignedCertificate(dir_, "a", "edgestate-a");
    MakeSelfSignedCertificate(dir_, "b", "edgestate-b");
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string File(const std::string& name) const { return (dir_ / name).string(); }

  void StartServer(const std::string& cert, std::chrono::milliseconds request_timeout) {
    auto tls = LoadServerTls(File(cert + ".pem"), File(cert + ".key"));
    ASSERT_TRUE(tls.ok()) << tls.status().ToString();
    HttpServerOptions options;
    options.listen_address = "127.0.0.1";
    options.port = 0;
    options.request_timeout = request_timeout;
    options.tls = *tls;
    server_ = std::make_unique<HttpServer>(options, &handler_, &metrics_);
    ASSERT_TRUE(server_->Start().ok());
  }

  // A client that trusts only `cert` (self-signed) and checks it names `cert`'s subject.
  std::unique_ptr<ssl::stream<tcp::socket>> ConnectTls(const std::string& cert,
                                                       boost::system::error_code* ec) {
    client_ctx_ = std::make_unique<ssl::context>(ssl::context::tls_client);
    client_ctx_->load_verify_file(File(cert + ".pem"));
    client_ctx_->set_verify_mode(ssl::verify_peer);
    auto s = std::make_unique<ssl::stream<tcp::socket>>(ioc_, *client_ctx_);
    s->next_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port()));
    s->handshake(ssl::stream_base::client, *ec);
    return s;
  }

  // Reads one response (headers and a Content-Length body) from `s`.
  template <class Stream>
  static std::string ReadResponse(Stream& s) {
    std::string data;
    char buf[4096];
    for (;;) {
      size_t end = data.find("\r\n\r\n");
      if (end != std::string::npos) {
        size_t cl = data.find("Content-Length: ");
        if (cl != std::string::npos && data.size() >= end + 4 + std::stoul(data.substr(cl + 16))) {
          return data;
        }
      }
      boost::system::error_code ec;
      size_t n = s.read_some(asio::buffer(buf), ec);
      if (ec) return data;
      data.append(buf, n);
    }
  }

  std::filesystem::path dir_;
  asio::io_context ioc_;
  std::unique_ptr<ssl::context> client_ctx_;
  MetricsRegistry registry_;
  HttpMetrics metrics_{&registry_};
  EchoHandler handler_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(TlsServerTest, LoadingNamesTheFileThatFails) {
  auto missing = LoadServerTls(File("nope.pem"), File("a.key"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(File("nope.pem")), std::string::npos)
      << missing.status().message();
  auto bad_key = LoadServerTls(File("a.pem"), File("a.pem"));  // A certificate, not a key.
  ASSERT_FALSE(bad_key.ok());
  EXPECT_NE(bad_key.status().message().find("key " + File("a.pem")), std::string::npos)
      << bad_key.status().message();
  auto mismatch = LoadServerTls(File("a.pem"), File("b.key"));
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find(File("b.key")), std::string::npos)
      << mismatch.status().message();
  EXPECT_NE(mismatch.status().message().find("match"), std::string::npos)
      << mismatch.status().message();
  EXPECT_TRUE(LoadServerTls(File("a.pem"), File("a.key")).ok());
}

TEST_F(TlsServerTest, RequestsTravelOverTlsAndPlainHttpIsNotAnswered) {
  StartServer("a", std::chrono::seconds(10));
  boost::system::error_code ec;
  auto s = ConnectTls("a", &ec);
  ASSERT_FALSE(ec) << ec.message();
  // Keep-alive, then pipelined.
  asio::write(*s, asio::buffer(std::string("GET /one HTTP/1.1\r\nHost: x\r\n\r\n")));
  EXPECT_NE(ReadResponse(*s).find("GET /one"), std::string::npos);
  asio::write(*s, asio::buffer(std::string("GET /two HTTP/1.1\r\nHost: x\r\n\r\n"
                                           "GET /three HTTP/1.1\r\nHost: x\r\n\r\n")));
  std::string both = ReadResponse(*s);
  if (both.find("GET /three") == std::string::npos) both += ReadResponse(*s);
  EXPECT_NE(both.find("GET /two"), std::string::npos);
  EXPECT_NE(both.find("GET /three"), std::string::npos);
  // Connection: close: the response arrives whole, then the server's close_notify.
  asio::write(*s, asio::buffer(std::string("GET /last HTTP/1.1\r\nConnection: close\r\n\r\n")));
  EXPECT_NE(ReadResponse(*s).find("GET /last"), std::string::npos);
  char c;
  s->read_some(asio::buffer(&c, 1), ec);
  EXPECT_EQ(ec, asio::error::eof) << ec.message();  // A clean TLS close, not a truncation.

  // A plain HTTP request is not a TLS ClientHello: no HTTP answer, the connection closes.
  tcp::socket plain(ioc_);
  plain.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port()));
  asio::write(plain, asio::buffer(std::string("GET /x HTTP/1.1\r\nHost: x\r\n\r\n")));
  std::string got;
  char buf[512];
  for (;;) {
    size_t n = plain.read_some(asio::buffer(buf), ec);
    if (ec) break;
    got.append(buf, n);
  }
  EXPECT_EQ(got.find("HTTP/1.1"), std::string::npos) << got;
}

TEST_F(TlsServerTest, AClientThatNeverStartsTlsIsClosedAtTheRequestTimeout) {
  StartServer("a", std::chrono::milliseconds(300));
  tcp::socket silent(ioc_);
  silent.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->port()));
  const auto start = Clock::now();
  char c;
  boost::system::error_code ec;
  silent.read_some(asio::buffer(&c, 1), ec);  // Blocks until the server closes.
  EXPECT_TRUE(ec);
  const auto waited = Clock::now() - start;
  EXPECT_GE(waited, std::chrono::milliseconds(250));
  EXPECT_LT(waited, std::chrono::seconds(10));  // Closed by the sweep, not by this test.
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (server_->active_connections() != 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(server_->active_connections(), 0u);
}

TEST_F(TlsServerTest, AReplacedCertificateServesNewConnectionsWhileOldOnesGoOn) {
  StartServer("a", std::chrono::seconds(10));
  boost::system::error_code ec;
  auto old_conn = ConnectTls("a", &ec);
  ASSERT_FALSE(ec) << ec.message();
  asio::write(*old_conn, asio::buffer(std::string("GET /before HTTP/1.1\r\nHost: x\r\n\r\n")));
  EXPECT_NE(ReadResponse(*old_conn).find("GET /before"), std::string::npos);

  auto b = LoadServerTls(File("b.pem"), File("b.key"));
  ASSERT_TRUE(b.ok());
  server_->ReplaceTls(*b);

  // A client that trusts only the old certificate is refused now; one that trusts the new
  // one gets in.
  auto refused = ConnectTls("a", &ec);
  EXPECT_TRUE(ec);
  auto fresh = ConnectTls("b", &ec);
  ASSERT_FALSE(ec) << ec.message();
  asio::write(*fresh, asio::buffer(std::string("GET /new HTTP/1.1\r\nHost: x\r\n\r\n")));
  EXPECT_NE(ReadResponse(*fresh).find("GET /new"), std::string::npos);
  // The connection made before the reload still works.
  asio::write(*old_conn, asio::buffer(std::string("GET /after HTTP/1.1\r\nHost: x\r\n\r\n")));
  EXPECT_NE(ReadResponse(*old_conn).find("GET /after"), std::string::npos);
}

}  // namespace
}  // namespace edgestate::http
