#include "bench/procstat.h"

#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>

namespace edgestate::bench {

namespace {

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

template <typename T>
bool ParseNumber(std::string_view s, T* out) {
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

}  // namespace

std::optional<StatFields> ParseStat(std::string_view line) {
  const size_t close = line.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  std::string_view rest = line.substr(close + 1);
  // After the name: state(0) ppid(1) pgrp session tty tpgid flags minflt cminflt majflt
  // cmajflt utime(11) stime(12) ...
  std::vector<std::string_view> fields;
  size_t i = 0;
  while (i < rest.size() && fields.size() < 13) {
    while (i < rest.size() && rest[i] == ' ') ++i;
    size_t j = i;
    while (j < rest.size() && rest[j] != ' ' && rest[j] != '\n') ++j;
    if (j > i) fields.push_back(rest.substr(i, j - i));
    i = j + 1;
  }
  if (fields.size() < 13) return std::nullopt;
  StatFields f;
  uint64_t utime = 0, stime = 0;
  if (!ParseNumber(fields[1], &f.ppid) || !ParseNumber(fields[11], &utime) ||
      !ParseNumber(fields[12], &stime)) {
    return std::nullopt;
  }
  f.cpu_ticks = utime + stime;
  return f;
}

std::optional<uint64_t> ParsePeakRss(std::string_view status) {
  constexpr std::string_view kKey = "VmHWM:";
  size_t at = status.find(kKey);
  if (at == std::string_view::npos || (at > 0 && status[at - 1] != '\n')) return std::nullopt;
  std::string_view rest = status.substr(at + kKey.size());
  size_t begin = rest.find_first_not_of(" \t");
  if (begin == std::string_view::npos) return std::nullopt;
  size_t end = rest.find(' ', begin);
  if (end == std::string_view::npos || rest.substr(end + 1, 2) != "kB") return std::nullopt;
  uint64_t kb = 0;
  if (!ParseNumber(rest.substr(begin, end - begin), &kb)) return std::nullopt;
  return kb * 1024;
}

Usage MeasureProcesses(const std::vector<pid_t>& roots, bool include_roots) {
  // Every process's parent, then the descendants of the roots.
  std::map<pid_t, StatFields> stats;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    pid_t pid = 0;
    const std::string name = entry.path().filename().string();
    if (!ParseNumber(std::string_view(name), &pid)) continue;
    std::optional<std::string> line = ReadFile(entry.path().string() + "/stat");
    if (!line) continue;
    if (std::optional<StatFields> f = ParseStat(*line)) stats[pid] = *f;
  }
  std::set<pid_t> counted;
  std::set<pid_t> frontier(roots.begin(), roots.end());
  std::set<pid_t> seen = frontier;
  while (!frontier.empty()) {
    std::set<pid_t> next;
    for (const auto& [pid, f] : stats) {
      if (frontier.count(f.ppid) && seen.insert(pid).second) next.insert(pid);
    }
    counted.insert(next.begin(), next.end());
    frontier = std::move(next);
  }
  if (include_roots) {
    for (pid_t r : roots) {
      if (stats.count(r)) counted.insert(r);
    }
  }
  Usage u;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  for (pid_t pid : counted) {
    std::optional<std::string> status = ReadFile("/proc/" + std::to_string(pid) + "/status");
    if (!status) continue;  // Exited meanwhile.
    u.cpu_seconds += static_cast<double>(stats[pid].cpu_ticks) / ticks;
    u.peak_rss_bytes += ParsePeakRss(*status).value_or(0);
    u.processes++;
  }
  return u;
}

}  // namespace edgestate::bench
