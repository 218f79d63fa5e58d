#include "bench/procstat.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <ctime>

namespace edgestate::bench {
namespace {

TEST(ProcstatTest, ParsesStatLinesWhateverTheCommandName) {
  auto f = ParseStat(
      "4242 (node server.js) S 4200 4242 4242 0 -1 4194560 1200 0 3 0 150 25 0 0 20 0 11 0 "
      "8160 1000000 5000 18446744073709551615\n");
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->ppid, 4200);
  EXPECT_EQ(f->cpu_ticks, 175u);
  // A name with a parenthesis and spaces of its own.
  f = ParseStat("7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 9 1 0 0 20 0 1 0 1 1 1");
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->ppid, 1);
  EXPECT_EQ(f->cpu_ticks, 10u);
  EXPECT_FALSE(ParseStat("").has_value());
  EXPECT_FALSE(ParseStat("12 (x) S 1 2 3").has_value());              // Too short.
  EXPECT_FALSE(ParseStat("12 (x) S p 1 1 0 -1 0 0 0 0 0 9 1").has_value());  // Not a number.
}

TEST(ProcstatTest, ParsesThePeakResidentSet) {
  EXPECT_EQ(ParsePeakRss("Name:\tx\nVmPeak:\t 9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1 kB\n"),
            2048u * 1024);
  EXPECT_FALSE(ParsePeakRss("Name:\tx\nVmRSS:\t 1 kB\n").has_value());
  EXPECT_FALSE(ParsePeakRss("VmHWM:\t lots kB\n").has_value());
  EXPECT_FALSE(ParsePeakRss("XVmHWM:\t 1 kB\n").has_value());
}

TEST(ProcstatTest, CountsAChildThatBurnsCpuAndLeavesOutItsParentOnRequest) {
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Burns 200 ms of its own CPU time (however busy the machine), says so, then waits.
    timespec t{};
    volatile uint64_t x = 0;
    do {
      for (int i = 0; i < 100000; ++i) x = x + 1;
      clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    } while (t.tv_sec == 0 && t.tv_nsec < 200'000'000);
    char c = 1;
    (void)!write(ready[1], &c, 1);
    pause();
    _exit(0);
  }
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  Usage with_self = MeasureProcesses({getpid()});
  Usage children_only = MeasureProcesses({getpid()}, /*include_roots=*/false);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  close(ready[0]);
  close(ready[1]);
  EXPECT_EQ(children_only.processes, 1);
  EXPECT_EQ(with_self.processes, 2);
  EXPECT_GE(children_only.cpu_seconds, 0.15);  // 200 ms, counted in 10 ms ticks.
  EXPECT_GT(children_only.peak_rss_bytes, 0u);
  EXPECT_GE(with_self.peak_rss_bytes, children_only.peak_rss_bytes);
  EXPECT_EQ(MeasureProcesses({child}).processes, 0);  // Gone.
}

}  // namespace
}  // namespace edgestate::bench
