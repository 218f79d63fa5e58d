#include "common/metrics.h"

#include <gtest/gtest.h>

#include <thread>

namespace edgestate {
namespace {

TEST(MetricsTest, RendersCounterWithHelpAndType) {
  MetricsRegistry r;
  r.AddCounter("x_total", "Things.", "route=\"/a\"").Inc(3);
  r.AddCounter("x_total", "Things.", "route=\"/b\"").Inc();
  std::string text = r.Render();
  EXPECT_NE(text.find("# HELP x_total Things.\n# TYPE x_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("x_total{route=\"/a\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("x_total{route=\"/b\"} 1\n"), std::string::npos);
  // HELP appears once per family.
  EXPECT_EQ(text.find("# HELP x_total"), text.rfind("# HELP x_total"));
}

TEST(MetricsTest, SameSeriesTwiceIsSameObject) {
  MetricsRegistry r;
  Counter& a = r.AddCounter("c", "h");
  Counter& b = r.AddCounter("c", "h");
  EXPECT_EQ(&a, &b);
}

TEST(MetricsTest, HistogramBucketsAreCumulative) {
  MetricsRegistry r;
  Histogram& h = r.AddHistogram("lat_seconds", "Latency.", {0.001, 0.01, 0.1});
  h.Observe(0.0005);
  h.Observe(0.001);  // Upper bounds are inclusive.
  h.Observe(0.05);
  h.Observe(5);
  std::string text = r.Render();
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"0.001\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"0.01\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"0.1\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"+Inf\"} 4\n"), std::string::npos);
  EXPECT_NE(text.find("lat_seconds_count 4\n"), std::string::npos);
}

TEST(MetricsTest, GaugeReadsAtRenderTime) {
  MetricsRegistry r;
  double v = 1;
  r.AddGauge("g", "A gauge.", [&] { return v; });
  EXPECT_NE(r.Render().find("g 1\n"), std::string::npos);
  v = 7;
  EXPECT_NE(r.Render().find("g 7\n"), std::string::npos);
}

TEST(MetricsTest, ConcurrentIncrementsAreAllCounted) {
  MetricsRegistry r;
  Counter& c = r.AddCounter("c", "h");
  Histogram& h = r.AddHistogram("h", "h", {1, 2});
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.Inc();
        h.Observe(1.5);
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(c.value(), 40000u);
  EXPECT_EQ(h.Take().count, 40000u);
}

}  // namespace
}  // namespace edgestate
