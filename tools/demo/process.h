// Child processes for the demo and the benchmark harness: started with fork/exec, stdout on a
// pipe (for a "ready" line), stderr appended to a log file, and SIGTERM'd by the kernel if this
// process dies (PR_SET_PDEATHSIG), so nothing outlives the harness.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace edgestate::demo {

struct ChildProcess {
  std::string name;
  pid_t pid = -1;
  int stdout_fd = -1;
  bool exited = false;
  std::string log_path;
};

// Starts argv[0] (a path, or a name looked up in PATH) with `env` added to this process's
// environment. Unavailable when it cannot be started.
StatusOr<ChildProcess> SpawnProcess(
    const std::string& name, const std::vector<std::string>& argv, const std::string& log_path,
    const std::vector<std::pair<std::string, std::string>>& env = {});

// Reads the child's stdout until `pattern` matches (returns the sub-matches, [0] = the whole
// match) or `timeout` passes (Unavailable, naming the child and its log).
StatusOr<std::vector<std::string>> AwaitOutput(ChildProcess* child, const std::regex& pattern,
                                               std::chrono::milliseconds timeout);

// SIGTERM to every child still running, then SIGKILL after `grace`; reaps all of them.
void StopProcesses(std::vector<ChildProcess>& children,
                   std::chrono::milliseconds grace = std::chrono::seconds(10));

}  // namespace edgestate::demo
