#include "common/region.h"

#include <fmt/format.h>

#include <algorithm>

namespace edgestate {

namespace {

bool IsRegionChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

}  // namespace

bool IsRegionName(std::string_view region) {
  return !region.empty() && region.size() <= kMaxRegionBytes &&
         std::all_of(region.begin(), region.end(), IsRegionChar);
}

Status ValidateRegionName(std::string_view region) {
  if (region.empty() || region.size() > kMaxRegionBytes) {
    return Status::InvalidArgument(
        fmt::format("region \"{}\" must be 1 to {} characters", region, kMaxRegionBytes));
  }
  if (!std::all_of(region.begin(), region.end(), IsRegionChar)) {
    return Status::InvalidArgument(
        fmt::format("region \"{}\" may contain only a-z, 0-9, '-' and '_'", region));
  }
  return Status::Ok();
}

}  // namespace edgestate
