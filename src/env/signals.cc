#include "env/signals.h"

#include <pthread.h>

namespace edgestate {

sigset_t BlockTerminationSignals(bool with_sigchld, bool with_sighup) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  if (with_sigchld) sigaddset(&signals, SIGCHLD);
  if (with_sighup) sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  return signals;
}

}  // namespace edgestate
