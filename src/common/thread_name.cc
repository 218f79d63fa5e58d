#include "common/thread_name.h"

#include <pthread.h>

#include <algorithm>

namespace edgestate {

namespace {
constexpr size_t kMaxName = 15;  // TASK_COMM_LEN - 1.
}  // namespace

void NameThisThread(std::string_view name) {
  char buf[kMaxName + 1];
  const size_t n = std::min(name.size(), kMaxName);
  std::copy_n(name.data(), n, buf);
  buf[n] = '\0';
  pthread_setname_np(pthread_self(), buf);
}

std::string ThisThreadName() {
  char buf[kMaxName + 1] = {};
  if (pthread_getname_np(pthread_self(), buf, sizeof(buf)) != 0) return "";
  return buf;
}

}  // namespace edgestate
