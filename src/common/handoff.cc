#include "common/handoff.h"

#include <utility>
#include <vector>

namespace edgestate {
namespace {

struct Pending {
  const void* key;
  std::function<void()> wake;
};

struct ThreadState {
  int depth = 0;
  std::vector<Pending> pending;  // A handful of receivers: a linear search is cheapest.
};

thread_local ThreadState state;

}  // namespace

HandoffScope::HandoffScope() { ++state.depth; }

HandoffScope::~HandoffScope() {
  if (--state.depth > 0) return;
  // A wake-up may open a scope of its own (and defer into it); take the list first.
  std::vector<Pending> run;
  run.swap(state.pending);
  for (Pending& p : run) p.wake();
}

bool HandoffScope::DeferWake(const void* key, std::function<void()> wake) {
  if (state.depth == 0) return false;
  for (const Pending& p : state.pending) {
    if (p.key == key) return true;
  }
  state.pending.push_back(Pending{key, std::move(wake)});
  return true;
}

}  // namespace edgestate
