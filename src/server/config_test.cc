#include "server/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "common/test_dir.h"

namespace edgestate::server {
namespace {

EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// Config files written by a test, under the test's scratch directory (removed at the end).
class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = FreshTestDir(); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string WriteFile(const std::string& text) {
    std::string path = (dir_ / (std::to_string(n_++) + ".toml")).string();
    std::ofstream(path) << text;
    return path;
  }

  // A config file holding `toml` is refused with InvalidArgument.
  void ExpectRefused(const char* toml) {
    ServeFlags g;
    g.config_file = WriteFile(toml);
    auto r = ResolveServeConfig(g, Env({}));
    EXPECT_FALSE(r.ok()) << toml;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << toml;
    }
  }

  std::filesystem::path dir_;
  int n_ = 0;
};

TEST(ConfigTest, Defaults) {
  auto c = ResolveServeConfig({}, Env({}));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->port, 8080);
  EXPECT_EQ(c->listen, "0.0.0.0");
  EXPECT_EQ(c->region, "local");
  EXPECT_EQ(c->data_dir, "./data");
  EXPECT_EQ(c->durability, service::Durability::kFsync);
  EXPECT_EQ(c->api_key, "");
}

TEST(ConfigTest, EnvironmentFallbacks) {
  auto c = ResolveServeConfig({}, Env({{"PORT", "9000"},
                                       {"FLY_REGION", "lhr"},
                                       {"EDGESTATE_DATA_DIR", "/tmp/x"},
                                       {"EDGESTATE_API_KEY", "k"}}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->port, 9000);
  EXPECT_EQ(c->region, "lhr");
  EXPECT_EQ(c->data_dir, "/tmp/x");
  EXPECT_EQ(c->api_key, "k");
  c = ResolveServeConfig({}, Env({{"FLY_REGION", "lhr"}, {"EDGESTATE_REGION", "fra"}}));
  EXPECT_EQ(c->region, "fra");
}

TEST_F(ConfigFileTest, PrecedenceFlagEnvFileDefault) {
  std::string file = WriteFile("port = 7000\nregion = \"syd\"\ndurability = \"async\"\n");
  ServeFlags f;
  f.config_file = file;
  auto c = ResolveServeConfig(f, Env({}));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->port, 7000);
  EXPECT_EQ(c->region, "syd");
  EXPECT_EQ(c->durability, service::Durability::kAsync);
  c = ResolveServeConfig(f, Env({{"PORT", "7100"}}));
  EXPECT_EQ(c->port, 7100);
  f.port = 7200;
  f.region = "gru";
  c = ResolveServeConfig(f, Env({{"PORT", "7100"}}));
  EXPECT_EQ(c->port, 7200);
  EXPECT_EQ(c->region, "gru");
}

TEST_F(ConfigFileTest, BadValuesAreClearErrors) {
  auto expect_bad = [](ServeFlags f, std::map<std::string, std::string> env,
                       const std::string& needle) {
    auto c = ResolveServeConfig(f, Env(env));
    ASSERT_FALSE(c.ok()) << needle;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(needle), std::string::npos) << c.status().message();
  };
  ServeFlags f;
  f.port = 70000;
  expect_bad(f, {}, "--port");
  expect_bad({}, {{"PORT", "80x"}}, "PORT");
  f = {};
  f.durability = "sometimes";
  expect_bad(f, {}, "fsync or async");
  f = {};
  f.region = "IAD!";
  expect_bad(f, {}, "region");
  f = {};
  f.listen = "not-an-ip";
  expect_bad(f, {}, "listen address");
  f = {};
  f.metrics_listen = "127.0.0.1";
  expect_bad(f, {}, "metrics listen address");
  f = {};
  f.api_key = "has space";
  expect_bad(f, {}, "api key");
  f = {};
  f.config_file = WriteFile("port = \"eighty\"\n");
  expect_bad(f, {}, "port must be an integer");
  f.config_file = WriteFile("prot = 1\n");
  expect_bad(f, {}, "unknown key");
  f.config_file = WriteFile("port = [\n");
  expect_bad(f, {}, "line");
  f.config_file = "/nonexistent/edgestate.toml";
  expect_bad(f, {}, "/nonexistent/edgestate.toml");
}

TEST_F(ConfigFileTest, CacheKeysFromFileAndFlags) {
  auto c = ResolveServeConfig({}, Env({}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->cache_mb, 256);
  EXPECT_TRUE(c->cache_origin.empty());
  EXPECT_EQ(c->cache_default_ttl_ms, 60000);
  EXPECT_EQ(c->origin_timeout_ms, 5000);
  EXPECT_EQ(c->sweep_mb_per_s, 8);
  ServeFlags f;
  f.config_file = WriteFile(
      "cache_mb = 64\ncache_origin = \"http://[::1]:9000/assets\"\ncache_default_ttl_ms = 0\n"
      "origin_timeout_ms = 250\nsweep_mb_per_s = 0\n");
  c = ResolveServeConfig(f, Env({}));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->cache_mb, 64);
  EXPECT_EQ(c->cache_origin, "http://[::1]:9000/assets");
  EXPECT_EQ(c->cache_default_ttl_ms, 0);
  EXPECT_EQ(c->origin_timeout_ms, 250);
  EXPECT_EQ(c->sweep_mb_per_s, 0);  // No bound.
  f.cache_mb = 1024;                // The flag beats the file.
  f.sweep_mb_per_s = 2;
  c = ResolveServeConfig(f, Env({}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->cache_mb, 1024);
  EXPECT_EQ(c->sweep_mb_per_s, 2);
  for (const char* bad : {"cache_mb = 7\n", "cache_mb = \"x\"\n", "cache_origin = \"origin\"\n",
                          "cache_origin = \"http://h:0\"\n", "origin_timeout_ms = 0\n",
                          "cache_default_ttl_ms = 2592000001\n", "sweep_mb_per_s = -1\n",
                          "sweep_mb_per_s = 1048577\n", "sweep_mb_per_s = 1.5\n"}) {
    ExpectRefused(bad);
  }
}

TEST_F(ConfigFileTest, PendingWriteBoundsFromFileAndFlags) {
  auto c = ResolveServeConfig({}, Env({}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->max_pending_writes, 4096);
  EXPECT_EQ(c->max_pending_write_mb, 64);
  EXPECT_EQ(c->max_batch_writes, 64);
  EXPECT_EQ(c->writer_nice, 10);
  ServeFlags f;
  f.config_file =
      WriteFile("max_pending_writes = 100\nmax_pending_write_mb = 8\nmax_batch_writes = 0\n");
  c = ResolveServeConfig(f, Env({}));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->max_pending_writes, 100);
  EXPECT_EQ(c->max_pending_write_mb, 8);
  EXPECT_EQ(c->max_batch_writes, 0);  // No bound.
  f.max_pending_writes = 7;           // The flag beats the file.
  c = ResolveServeConfig(f, Env({}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->max_pending_writes, 7);
  for (const char* bad : {"max_pending_writes = 0\n", "max_pending_writes = \"many\"\n",
                          "max_pending_write_mb = 0\n", "max_pending_write_mb = 1048577\n",
                          "max_batch_writes = -1\n", "writer_nice = 20\n", "writer_nice = -5\n"}) {
    ExpectRefused(bad);
  }
}

TEST_F(ConfigFileTest, PeerTlsKeysFromFileAndFlags) {
  auto c = ResolveServeConfig({}, Env({}));
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->peer_insecure_plaintext);  // Encrypted unless asked otherwise.
  EXPECT_EQ(c->peer_tls_cert, "");
  ServeFlags f;
  f.config_file = WriteFile(
      "peer_tls_cert = \"/etc/e/peer.pem\"\npeer_tls_key = \"/etc/e/peer.key\"\n"
      "peer_tls_ca = \"/etc/e/ca.pem\"\n");
  c = ResolveServeConfig(f, Env({}));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->peer_tls_cert, "/etc/e/peer.pem");
  EXPECT_EQ(c->peer_tls_key, "/etc/e/peer.key");
  EXPECT_EQ(c->peer_tls_ca, "/etc/e/ca.pem");
  f.peer_tls_ca = "/other/ca.pem";  // The flag beats the file.
  c = ResolveServeConfig(f, Env({}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->peer_tls_ca, "/other/ca.pem");
  f.peer_insecure_plaintext = true;  // Certificates and plaintext contradict each other.
  EXPECT_FALSE(ResolveServeConfig(f, Env({})).ok());
  ServeFlags p;
  p.config_file = WriteFile("peer_insecure_plaintext = true\n");
  c = ResolveServeConfig(p, Env({}));
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->peer_insecure_plaintext);
  for (const char* bad : {"peer_tls_cert = \"/a.pem\"\n",  // Without key and CA.
                          "peer_tls_cert = \"/a.pem\"\npeer_tls_key = \"/a.key\"\n",
                          "peer_insecure_plaintext = \"yes\"\n", "peer_tls_ca = 3\n"}) {
    ExpectRefused(bad);
  }
}

TEST_F(ConfigFileTest, ClientTlsKeysFromFileAndFlags) {
  auto c = ResolveServeConfig({}, Env({}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->tls_cert, "");  // Plain HTTP unless asked.
  ServeFlags f;
  f.config_file = WriteFile("tls_cert = \"/etc/e/site.pem\"\ntls_key = \"/etc/e/site.key\"\n");
  c = ResolveServeConfig(f, Env({}));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->tls_cert, "/etc/e/site.pem");
  EXPECT_EQ(c->tls_key, "/etc/e/site.key");
  f.tls_key = "/other/site.key";  // The flag beats the file.
  c = ResolveServeConfig(f, Env({}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->tls_key, "/other/site.key");
  ServeFlags lone;
  lone.tls_cert = "/etc/e/site.pem";  // A certificate without its key.
  c = ResolveServeConfig(lone, Env({}));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("--tls-key"), std::string::npos) << c.status().message();
  for (const char* bad : {"tls_key = \"/a.key\"\n", "tls_cert = 3\n"}) ExpectRefused(bad);
}

TEST_F(ConfigFileTest, ConsistencyKeysFromFileAndFlags) {
  auto c = ResolveServeConfig({}, Env({}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->default_consistency, consistency::Level::kLocal);
  EXPECT_EQ(c->session_wait_ms, 1000);
  EXPECT_FALSE(c->session_cookie);
  ServeFlags f;
  f.config_file = WriteFile(
      "default_consistency = \"session\"\nsession_wait_ms = 250\nsession_cookie = true\n");
  c = ResolveServeConfig(f, Env({}));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->default_consistency, consistency::Level::kSession);
  EXPECT_EQ(c->session_wait_ms, 250);
  EXPECT_TRUE(c->session_cookie);
  f.default_consistency = "strong";  // The flag beats the file.
  f.session_cookie = false;
  c = ResolveServeConfig(f, Env({}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->default_consistency, consistency::Level::kStrong);
  EXPECT_FALSE(c->session_cookie);
  for (const char* bad : {"default_consistency = \"bounded\"\n", "default_consistency = 3\n",
                          "default_consistency = \"eventual\"\n", "session_cookie = \"yes\"\n",
                          "session_wait_ms = 60001\n", "session_wait_ms = -5\n"}) {
    ExpectRefused(bad);
  }
  ServeFlags g;
  g.default_consistency = "Session";
  auto r = ResolveServeConfig(g, Env({}));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--default-consistency"), std::string::npos);
}

TEST_F(ConfigFileTest, PeersDnsFromFileAndFlags) {
  ServeFlags f;
  f.config_file = WriteFile(
      "region = \"iad\"\npeer_listen = \"[::]:7946\"\ncluster_secret = \"s3cret-s3cret\"\n"
      "peers_dns = \"srv:_peer._tcp.edgestate-peers.default.svc.cluster.local\"\n"
      "peers_dns_interval_ms = 2000\npeers_dns_server = \"[fdaa::3]:53\"\n");
  auto c = ResolveServeConfig(f, Env({{"FLY_MACHINE_ID", "683d314fdd4d68"}}));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->peers_dns, "srv:_peer._tcp.edgestate-peers.default.svc.cluster.local");
  EXPECT_EQ(c->peers_dns_interval_ms, 2000);
  EXPECT_EQ(c->peers_dns_server, "[fdaa::3]:53");
  EXPECT_EQ(c->peers_dns_port, 0);
  EXPECT_EQ(c->machine_id, "683d314fdd4d68");
  f.peers_dns = "fly:edgestate-demo";
  f.peers_dns_port = 7000;
  c = ResolveServeConfig(f, Env({}));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->peers_dns, "fly:edgestate-demo");
  EXPECT_EQ(c->peers_dns_port, 7000);
  // Voters need not be known peers: DNS finds them later.
  f.strong_voters = "iad,lhr,fra";
  EXPECT_TRUE(ResolveServeConfig(f, Env({})).ok());

  auto refused = [&](ServeFlags g, const char* needle) {
    auto r = ResolveServeConfig(g, Env({}));
    ASSERT_FALSE(r.ok()) << needle;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
  };
  ServeFlags g = f;
  g.peers = "lhr=127.0.0.1:1";
  refused(g, "exclude each other");
  g = f;
  g.peers_dns = "consul:x";
  refused(g, "fly:APP nor srv:NAME");
  g = f;
  g.peers_dns_interval_ms = 99;
  refused(g, "--peers-dns-interval-ms");
  g = f;
  g.peers_dns_port = 0;
  g.peer_listen = "127.0.0.1:0";
  refused(g, "port 0");
  g = f;
  g.peers_dns_server = "fdaa::3";
  refused(g, "--peers-dns-server");
  g = f;
  g.cluster_secret = "";
  refused(g, "cluster secret");
}

}  // namespace
}  // namespace edgestate::server
