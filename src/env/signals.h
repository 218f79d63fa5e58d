// Process signal set-up shared by every long-running subcommand.
#pragma once

#include <signal.h>

namespace edgestate {

// Blocks SIGINT and SIGTERM (and SIGCHLD when `with_sigchld`, SIGHUP when `with_sighup`: the
// caller then owns a hang-up, which no longer ends the process) in the calling thread, so every
// thread started afterwards inherits the mask and the caller can take them with sigwait, and
// ignores SIGPIPE (a vanished peer is an error on its socket, not a process exit). Returns the
// blocked set for sigwait. REQUIRES: called before any other thread is started.
sigset_t BlockTerminationSignals(bool with_sigchld = false, bool with_sighup = false);

}  // namespace edgestate
