// Node: one region's process. Wires storage, the counter service and the HTTP server
// together, runs until SIGINT or SIGTERM, then shuts down in order (stop accepting, finish
// in-flight requests, commit and sync, close storage).
#pragma once

#include "common/status.h"
#include "server/config.h"

namespace edgestate::server {

// Runs the node in the calling thread until a termination signal. Returns OK after a clean
// shutdown; Unavailable/InvalidArgument when start-up fails (storage cannot be opened or
// read, the port cannot be bound). On success prints one line to stdout:
//   edgestate listening on http://<listen>:<port> region=<r> data=<dir> durability=<d>
// REQUIRES: called from main before any other thread is started (it sets the signal mask
// that every later thread inherits).
Status RunNode(const ServeConfig& config);

// The number of CPUs this process may run on (its affinity mask), at least 1.
int AvailableCpus();

}  // namespace edgestate::server
