#include "netem/rtt_model.h"

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "common/region.h"

namespace edgestate::netem {

extern const char kDefaultRttCsv[];  // Generated from tools/netem/rtt-8-regions.csv at build time.

namespace {

std::vector<std::string> SplitCsv(std::string_view line) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t comma = line.find(',', start);
    std::string_view cell =
        line.substr(start, comma == std::string_view::npos ? line.npos : comma - start);
    while (!cell.empty() && (cell.front() == ' ' || cell.front() == '\t')) cell.remove_prefix(1);
    while (!cell.empty() && (cell.back() == ' ' || cell.back() == '\t' || cell.back() == '\r')) {
      cell.remove_suffix(1);
    }
    out.emplace_back(cell);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace

StatusOr<RttModel> RttModel::Parse(std::string_view csv) {
  RttModel m;
  std::vector<std::vector<std::string>> rows;
  std::vector<int> line_numbers;
  int line_no = 0;
  size_t pos = 0;
  while (pos <= csv.size()) {
    size_t nl = csv.find('\n', pos);
    std::string_view line = csv.substr(pos, nl == csv.npos ? csv.npos : nl - pos);
    pos = nl == csv.npos ? csv.size() + 1 : nl + 1;
    ++line_no;
    std::string_view trimmed = line;
    while (!trimmed.empty() && (trimmed.back() == '\r' || trimmed.back() == ' '))
      trimmed.remove_suffix(1);
    if (trimmed.empty() || trimmed.front() == '#') continue;
    rows.push_back(SplitCsv(trimmed));
    line_numbers.push_back(line_no);
  }
  if (rows.empty()) return Status::InvalidArgument("RTT model is empty");
  const std::vector<std::string>& header = rows[0];
  if (header.size() < 2) return Status::InvalidArgument("RTT model header names no region");
  std::set<std::string> seen;
  for (size_t i = 1; i < header.size(); ++i) {
    if (Status s = ValidateRegionName(header[i]); !s.ok()) {
      return Status::InvalidArgument(
          fmt::format("RTT model line {}: {}", line_numbers[0], s.message()));
    }
    if (!seen.insert(header[i]).second) {
      return Status::InvalidArgument(fmt::format("RTT model names {} twice", header[i]));
    }
    m.regions_.push_back(header[i]);
  }
  const size_t n = m.regions_.size();
  if (rows.size() != n + 1) {
    return Status::InvalidArgument(
        fmt::format("RTT model has {} regions but {} rows", n, rows.size() - 1));
  }
  for (size_t r = 1; r < rows.size(); ++r) {
    const auto& row = rows[r];
    if (row.size() != n + 1 || row[0] != m.regions_[r - 1]) {
      return Status::InvalidArgument(
          fmt::format("RTT model line {}: expected {} followed by {} values", line_numbers[r],
                      m.regions_[r - 1], n));
    }
    for (size_t c = 1; c <= n; ++c) {
      double v = 0;
      std::istringstream in(row[c]);
      if (!(in >> v) || !in.eof() || !std::isfinite(v) || v < 0 || v > 10'000) {
        return Status::InvalidArgument(
            fmt::format("RTT model line {}: \"{}\" is not a round trip in ms (0..10000)",
                        line_numbers[r], row[c]));
      }
      m.rtt_[{m.regions_[r - 1], m.regions_[c - 1]}] = v;
    }
  }
  for (const auto& a : m.regions_) {
    if (m.rtt_[{a, a}] != 0)
      return Status::InvalidArgument("RTT model diagonal must be 0 (" + a + ")");
    for (const auto& b : m.regions_) {
      if (std::abs(m.rtt_[{a, b}] - m.rtt_[{b, a}]) > 0.5) {
        return Status::InvalidArgument(
            fmt::format("RTT model is not symmetric for {} and {}", a, b));
      }
    }
  }
  return m;
}

StatusOr<RttModel> RttModel::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot read RTT model " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto m = Parse(ss.str());
  if (!m.ok()) return Status::InvalidArgument(path + ": " + m.status().message());
  return m;
}

StatusOr<RttModel> RttModel::LoadOrDefault(const std::string& path) {
  if (path.empty() || path == "default") return Default();
  return Load(path);
}

const RttModel& RttModel::Default() {
  static const RttModel* m = new RttModel(*Parse(kDefaultRttCsv));
  return *m;
}

bool RttModel::Has(std::string_view region) const {
  for (const auto& r : regions_) {
    if (r == region) return true;
  }
  return false;
}

double RttModel::RttMs(std::string_view a, std::string_view b) const {
  return rtt_.at({std::string(a), std::string(b)});
}

}  // namespace edgestate::netem
