// HandoffScope: coalesces the wake-ups one thread causes in others while it hands results over.
//
// A group commit answers dozens of requests at once, each on the I/O thread that owns its
// connection. Waking that thread once per answer costs a context switch and an epoll_ctl per
// answer (and, on a shared core, the woken thread preempts the one answering). Within a scope,
// DeferWake remembers each distinct wake-up instead; the outermost scope's end runs them, each
// once, in the order they were first deferred. The receiving side keeps its own queue of work
// (filled at once, under its own lock) and is woken by the deferred call.
//
// Thread-safety: scopes and DeferWake concern only the calling thread (thread-local state).
// A scope must end on the thread that began it; nested scopes are allowed.
#pragma once

#include <functional>

namespace edgestate {

class HandoffScope {
 public:
  HandoffScope();
  // Runs the wake-ups deferred since the outermost scope began (when this is the outermost).
  ~HandoffScope();
  HandoffScope(const HandoffScope&) = delete;
  HandoffScope& operator=(const HandoffScope&) = delete;

  // When a scope is open on this thread: keeps `wake`, unless a wake-up under `key` is kept
  // already (the first one stands), and returns true. Otherwise returns false and
  // the caller wakes the receiver itself. `key` identifies the receiver (its address); the
  // receiver must outlive the scope.
  static bool DeferWake(const void* key, std::function<void()> wake);
};

}  // namespace edgestate
