// RttModel: round-trip times between regions, from a CSV matrix such as
// tools/netem/rtt-8-regions.csv:
//
//   # comments
//   from,iad,sjc,...
//   iad,0,72,...
//
// The model must be square, name each region once, have a zero diagonal and be symmetric
// (within 0.5 ms). Pure; thread-safe once built.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace edgestate::netem {

class RttModel {
 public:
  // InvalidArgument with the line number when the text is not such a matrix.
  static StatusOr<RttModel> Parse(std::string_view csv);
  // Reads and parses a file; NotFound when it cannot be read.
  static StatusOr<RttModel> Load(const std::string& path);
  // Default() when `path` is empty or "default", else Load(path).
  static StatusOr<RttModel> LoadOrDefault(const std::string& path);
  // The model shipped in the repository (tools/netem/rtt-8-regions.csv), compiled in.
  static const RttModel& Default();

  const std::vector<std::string>& regions() const { return regions_; }
  bool Has(std::string_view region) const;
  // REQUIRES: Has(a) && Has(b).
  double RttMs(std::string_view a, std::string_view b) const;

 private:
  std::vector<std::string> regions_;
  std::map<std::pair<std::string, std::string>, double> rtt_;
};

}  // namespace edgestate::netem
