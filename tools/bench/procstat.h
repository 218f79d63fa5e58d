// What processes cost: CPU time and peak resident memory of a process and its descendants,
// read from /proc (Linux). For the article's resource columns (docs/benchmarks.md).
//
// Thread-safe (no shared state). A process that exits while it is being read is left out.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace edgestate::bench {

// The fields of one /proc/PID/stat line that matter here. The command name may hold spaces
// and parentheses: fields are counted after its last ')'.
struct StatFields {
  pid_t ppid = 0;
  uint64_t cpu_ticks = 0;  // utime + stime, in clock ticks (sysconf(_SC_CLK_TCK)).
};
std::optional<StatFields> ParseStat(std::string_view line);

// VmHWM (the peak resident set) of a /proc/PID/status text, in bytes; nullopt when absent.
std::optional<uint64_t> ParsePeakRss(std::string_view status);

struct Usage {
  double cpu_seconds = 0;       // User + system time of the processes counted.
  uint64_t peak_rss_bytes = 0;  // The sum of each one's own peak (an upper bound of the total).
  int processes = 0;
};

// `roots` and every process descending from them, alive now; with `include_roots` false, the
// roots themselves are left out (a supervisor whose own work is not the design's).
Usage MeasureProcesses(const std::vector<pid_t>& roots, bool include_roots = true);

}  // namespace edgestate::bench
