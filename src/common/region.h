// Region names, one rule everywhere: flags, peer lists, counter slots, retired lives
// ("REGION@EPOCH"), session tokens and the RTT model.
#pragma once

#include <cstddef>
#include <string_view>

#include "common/status.h"

namespace edgestate {

inline constexpr size_t kMaxRegionBytes = 32;

// True for 1..kMaxRegionBytes characters of a-z, 0-9, '-' and '_'. Pure.
bool IsRegionName(std::string_view region);
// The same, as an InvalidArgument that quotes the name and says which rule it breaks.
Status ValidateRegionName(std::string_view region);

}  // namespace edgestate
