// Names for the node's threads, so `top -H`, `ps -L`, perf and debuggers tell them apart
// (docs/threading.md lists them).
#pragma once

#include <string>
#include <string_view>

namespace edgestate {

// Names the calling thread. Linux keeps at most 15 bytes of a name; the rest is cut off.
// Best effort: a failure leaves the old name (a name is a diagnostic, not a contract).
void NameThisThread(std::string_view name);

// The calling thread's name; "" when it cannot be read.
std::string ThisThreadName();

}  // namespace edgestate
