#include "replication/tls.h"

#include <gtest/gtest.h>

// clang-format off
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.
// clang-format on
#include <boost/asio.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <filesystem>
#include <optional>
#include <string>

#include "common/test_dir.h"
#include "net/test_certs.h"

namespace edgestate::replication {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

struct Outcome {
  error_code client;
  error_code server;
  std::string received;  // What the server read after both handshakes succeeded.
};

// Connects a client with `client_ctx` (nullptr: plaintext, it just writes `message`) to a
// server with `server_ctx` over loopback; both handshake, then the client sends `message`.
Outcome Exchange(asio::ssl::context* client_ctx, asio::ssl::context& server_ctx,
                 const std::string& message) {
  asio::io_context ioc;
  tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket client_sock(ioc), server_sock(ioc);
  std::optional<asio::ssl::stream<tcp::socket&>> client, server;
  server.emplace(server_sock, server_ctx);
  if (client_ctx) client.emplace(client_sock, *client_ctx);
  Outcome out;
  std::string buf(message.size(), '\0');
  acceptor.async_accept(server_sock, [&](error_code ec) {
    if (ec) {
      out.server = ec;
      return;
    }
    server->async_handshake(asio::ssl::stream_base::server, [&](error_code hec) {
      out.server = hec;
      if (hec) {
        server_sock.close();
        return;
      }
      asio::async_read(*server, asio::buffer(buf), [&](error_code rec, size_t n) {
        if (!rec) out.received = buf.substr(0, n);
      });
    });
  });
  client_sock.async_connect(acceptor.local_endpoint(), [&](error_code ec) {
    if (ec) {
      out.client = ec;
      return;
    }
    if (!client) {
      asio::async_write(client_sock, asio::buffer(message), [](error_code, size_t) {});
      return;
    }
    client->async_handshake(asio::ssl::stream_base::client, [&](error_code hec) {
      out.client = hec;
      if (hec) {
        client_sock.close();
        return;
      }
      asio::async_write(*client, asio::buffer(message), [](error_code, size_t) {});
    });
  });
  ioc.run_for(std::chrono::seconds(10));
  return out;
}

std::unique_ptr<PeerTls> Psk(const std::string& secret) {
  auto t = PeerTls::Create(PeerTlsOptions{}, secret);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return std::move(t).value();
}

TEST(PeerTlsTest, TheSameSecretOnBothEndsCompletesTheHandshakeAndCarriesBytes) {
  auto a = Psk("cluster-secret-1"), b = Psk("cluster-secret-1");
  Outcome o = Exchange(a->client(), *b->server(), "delta frame");
  EXPECT_FALSE(o.client) << o.client.message();
  EXPECT_FALSE(o.server) << o.server.message();
  EXPECT_EQ(o.received, "delta frame");
}

TEST(PeerTlsTest, ADifferentSecretFailsOnBothEndsAndDeliversNothing) {
  auto a = Psk("cluster-secret-1"), b = Psk("cluster-secret-2");
  Outcome o = Exchange(a->client(), *b->server(), "delta frame");
  EXPECT_TRUE(o.client);
  EXPECT_TRUE(o.server);
  EXPECT_EQ(o.received, "");
}

TEST(PeerTlsTest, APlaintextClientIsRefusedByATlsServer) {
  auto b = Psk("cluster-secret-1");
  // A plausible edgestate frame header and body: it must not get through the TLS layer.
  Outcome o = Exchange(nullptr, *b->server(), std::string("\0\0\0\x05hello", 9));
  EXPECT_TRUE(o.server);
  EXPECT_EQ(o.received, "");
}

TEST(PeerTlsTest, PlaintextModeHasNoContexts) {
  PeerTlsOptions opts;
  opts.mode = PeerTlsOptions::Mode::kPlaintext;
  auto t = PeerTls::Create(opts, "");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->client(), nullptr);
  EXPECT_EQ((*t)->server(), nullptr);
  EXPECT_EQ(PeerTlsModeName((*t)->mode()), "plaintext");
}

TEST(PeerTlsTest, PskModeNeedsASecret) {
  auto t = PeerTls::Create(PeerTlsOptions{}, "");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
}

TEST(PeerTlsTest, AMissingCertificateIsNamed) {
  PeerTlsOptions opts;
  opts.mode = PeerTlsOptions::Mode::kCertificates;
  opts.cert_file = "/nonexistent/peer.pem";
  opts.key_file = "/nonexistent/peer.key";
  opts.ca_file = "/nonexistent/ca.pem";
  auto t = PeerTls::Create(opts, "ignored-secret");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("/nonexistent/peer.pem"), std::string::npos)
      << t.status().message();
}

TEST(PeerTlsTest, AKeyOfAnotherCertificateOrAMissingCaIsNamed) {
  const std::filesystem::path dir = FreshTestDir();
  MakeSelfSignedCertificate(dir, "a", "node-a");
  MakeSelfSignedCertificate(dir, "b", "node-b");
  PeerTlsOptions opts;
  opts.mode = PeerTlsOptions::Mode::kCertificates;
  opts.cert_file = (dir / "a.pem").string();
  opts.key_file = (dir / "b.key").string();
  opts.ca_file = (dir / "a.pem").string();
  auto t = PeerTls::Create(opts, "ignored-secret");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find(opts.key_file), std::string::npos) << t.status().message();
  opts.key_file = (dir / "a.key").string();
  opts.ca_file = (dir / "no-ca.pem").string();
  t = PeerTls::Create(opts, "ignored-secret");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find(opts.ca_file), std::string::npos) << t.status().message();
  opts.ca_file = (dir / "a.pem").string();
  EXPECT_TRUE(PeerTls::Create(opts, "ignored-secret").ok());
  std::filesystem::remove_all(dir);
}

TEST(PeerTlsTest, TheKeyIsDerivedNotTheSecretItself) {
  std::string k1 = DerivePeerPsk("cluster-secret-1");
  EXPECT_EQ(k1.size(), 32u);
  EXPECT_EQ(k1, DerivePeerPsk("cluster-secret-1"));
  EXPECT_NE(k1, DerivePeerPsk("cluster-secret-2"));
  EXPECT_EQ(k1.find("cluster-secret-1"), std::string::npos);
}

}  // namespace
}  // namespace edgestate::replication
