// Real sockets on loopback: an echo server behind a link of the emulator.
#include "netem/wan.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

namespace edgestate::netem {
namespace {

using Clock = std::chrono::steady_clock;

// A blocking echo server on 127.0.0.1 (one thread per connection).
class EchoServer {
 public:
  EchoServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ::listen(fd_, 64);
    socklen_t len = sizeof(a);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      for (;;) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        workers_.emplace_back([c] {
          char buf[65536];
          for (;;) {
            ssize_t n = ::read(c, buf, sizeof(buf));
            if (n <= 0) break;
            ssize_t off = 0;
            while (off < n) {
              ssize_t w = ::write(c, buf + off, n - off);
              if (w <= 0) break;
              off += w;
            }
          }
          ::close(c);
        });
      }
    });
  }
  ~EchoServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
    for (auto& w : workers_) w.join();
  }
  uint16_t port() const { return port_; }

 private:
  int fd_;
  uint16_t port_;
  std::thread thread_;
  std::vector<std::thread> workers_;
};

int Connect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  timeval tv{30, 0};  // A deadline for a broken link, not a latency bound.
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

bool ReadExactly(int fd, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, buf + got, n - got);
    if (r <= 0) return false;
    got += r;
  }
  return true;
}

class WanTest : public ::testing::Test {
 protected:
  void AddEchoLink(double one_way_ms, double jitter_ms = 0) {
    LinkSpec spec{"iad", "lhr", one_way_ms, jitter_ms, 0, "127.0.0.1", echo_.port()};
    ASSERT_TRUE(wan_.AddLink(spec).ok());
    ASSERT_TRUE(wan_.Start().ok());
    port_ = wan_.LinkPort("iad", "lhr");
    ASSERT_NE(port_, 0);
  }
  EchoServer echo_;
  WanEmulator wan_;
  uint16_t port_ = 0;
};

TEST_F(WanTest, AddsHalfTheRoundTripInEachDirection) {
  AddEchoLink(/*one_way_ms=*/20);
  int fd = Connect(port_);
  ASSERT_GE(fd, 0);
  std::vector<double> rtts;
  char buf[8];
  for (int i = 0; i < 15; ++i) {
    auto start = Clock::now();
    ASSERT_EQ(::write(fd, "ping1234", 8), 8);
    ASSERT_TRUE(ReadExactly(fd, buf, 8));
    rtts.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  ::close(fd);
  std::sort(rtts.begin(), rtts.end());
  // Never early: every round trip holds at least the model's delay in both directions.
  EXPECT_GE(rtts.front(), 40.0);
  // Applied once per direction, not twice (which would be 80 ms or more). How close the delay
  // comes to the model is a figure of bench/wan_bench.py, not a property a busy machine keeps.
  EXPECT_LT(rtts[rtts.size() / 2], 80.0);
  auto stats = wan_.Stats();
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].bytes_forward, 15u * 8);
  EXPECT_EQ(stats[0].late_samples, 30u);
  EXPECT_EQ(stats[0].bytes_backward, 15u * 8);
}

TEST_F(WanTest, JitterNeverReordersBytes) {
  AddEchoLink(/*one_way_ms=*/2, /*jitter_ms=*/5);
  int fd = Connect(port_);
  ASSERT_GE(fd, 0);
  constexpr int kMessages = 2000;
  std::thread writer([fd] {
    for (int i = 0; i < kMessages; ++i) {
      uint32_t v = i;
      ASSERT_EQ(::write(fd, &v, sizeof(v)), 4);
      if (i % 50 == 0) std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  });
  for (int i = 0; i < kMessages; ++i) {
    uint32_t v;
    ASSERT_TRUE(ReadExactly(fd, reinterpret_cast<char*>(&v), 4));
    ASSERT_EQ(v, static_cast<uint32_t>(i)) << "bytes reordered";
  }
  writer.join();
  ::close(fd);
}

TEST_F(WanTest, CutHoldsTrafficUntilHealed) {
  AddEchoLink(/*one_way_ms=*/1);
  int fd = Connect(port_);
  ASSERT_GE(fd, 0);
  char buf[4];
  ASSERT_EQ(::write(fd, "abcd", 4), 4);
  ASSERT_TRUE(ReadExactly(fd, buf, 4));
  ASSERT_TRUE(wan_.Cut("iad", "lhr").ok());
  EXPECT_TRUE(wan_.Stats()[0].cut);
  timeval short_tv{0, 300'000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &short_tv, sizeof(short_tv));
  ASSERT_EQ(::write(fd, "efgh", 4), 4);
  EXPECT_FALSE(ReadExactly(fd, buf, 4)) << "a cut link must not deliver";
  int fd2 = Connect(port_);  // A new connection is held too.
  ASSERT_GE(fd2, 0);
  ::setsockopt(fd2, SOL_SOCKET, SO_RCVTIMEO, &short_tv, sizeof(short_tv));
  ASSERT_EQ(::write(fd2, "ijkl", 4), 4);
  EXPECT_FALSE(ReadExactly(fd2, buf, 4));
  auto healed_at = Clock::now();
  ASSERT_TRUE(wan_.Heal("iad", "lhr").ok());
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd2, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ASSERT_TRUE(ReadExactly(fd, buf, 4));  // What was held arrives, in order, after the heal.
  EXPECT_EQ(std::memcmp(buf, "efgh", 4), 0);
  ASSERT_TRUE(ReadExactly(fd2, buf, 4));
  EXPECT_EQ(std::memcmp(buf, "ijkl", 4), 0);
  // Released by the heal itself, not by a later timer or a reconnect (each would take seconds).
  EXPECT_LT(Clock::now() - healed_at, std::chrono::seconds(3));
  ::close(fd);
  ::close(fd2);
  EXPECT_EQ(wan_.Cut("iad", "nrt").code(), StatusCode::kNotFound);
  EXPECT_TRUE(wan_.Isolate("lhr").ok());
  EXPECT_TRUE(wan_.Stats()[0].cut);
  EXPECT_TRUE(wan_.Rejoin("lhr").ok());
  EXPECT_FALSE(wan_.Stats()[0].cut);
  EXPECT_EQ(wan_.Isolate("nrt").code(), StatusCode::kNotFound);
}

TEST_F(WanTest, LargeTransfersArriveIntact) {
  AddEchoLink(/*one_way_ms=*/3);
  int fd = Connect(port_);
  ASSERT_GE(fd, 0);
  std::string data(4 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + 3);
  std::thread writer([&] {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t w = ::write(fd, data.data() + off, data.size() - off);
      ASSERT_GT(w, 0);
      off += w;
    }
  });
  std::string got(data.size(), '\0');
  ASSERT_TRUE(ReadExactly(fd, got.data(), got.size()));
  writer.join();
  EXPECT_TRUE(got == data);
  ::close(fd);
}

}  // namespace
}  // namespace edgestate::netem
