#include "demo/process.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace edgestate::demo {

StatusOr<ChildProcess> SpawnProcess(const std::string& name, const std::vector<std::string>& argv,
                                    const std::string& log_path,
                                    const std::vector<std::pair<std::string, std::string>>& env) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Status::Unavailable("pipe failed");
  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return Status::Unavailable("cannot open " + log_path);
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    ::close(log_fd);
    return Status::Unavailable("fork failed");
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    dup2(fds[1], STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    execvp(args[0], args.data());
    _exit(127);
  }
  ::close(fds[1]);
  ::close(log_fd);
  return ChildProcess{name, pid, fds[0], false, log_path};
}

StatusOr<std::vector<std::string>> AwaitOutput(ChildProcess* c, const std::regex& pattern,
                                               std::chrono::milliseconds timeout) {
  std::string buf;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now())
                                    .count());
    pollfd p{c->stdout_fd, POLLIN, 0};
    if (poll(&p, 1, std::max(1, left)) <= 0) continue;
    char tmp[1024];
    ssize_t n = ::read(c->stdout_fd, tmp, sizeof(tmp));
    if (n <= 0) break;  // The child closed stdout: it exited or will not say more.
    buf.append(tmp, n);
    std::smatch m;
    if (std::regex_search(buf, m, pattern)) {
      std::vector<std::string> out;
      for (const auto& sub : m) out.push_back(sub.str());
      return out;
    }
  }
  std::string tail;
  if (FILE* f = std::fopen(c->log_path.c_str(), "r")) {
    std::fseek(f, 0, SEEK_END);
    long size = std::ftell(f);
    std::fseek(f, std::max(0L, size - 600), SEEK_SET);
    char buf[601];
    size_t n = std::fread(buf, 1, 600, f);
    std::fclose(f);
    tail.assign(buf, n);
  }
  return Status::Unavailable(c->name + " did not start (see " + c->log_path + ")" +
                             (tail.empty() ? "" : "; its log ends: " + tail));
}

void StopProcesses(std::vector<ChildProcess>& children, std::chrono::milliseconds grace) {
  for (auto& c : children) {
    if (!c.exited && c.pid > 0) kill(c.pid, SIGTERM);
  }
  auto deadline = std::chrono::steady_clock::now() + grace;
  for (auto& c : children) {
    while (!c.exited && c.pid > 0) {
      int status;
      pid_t r = waitpid(c.pid, &status, WNOHANG);
      if (r == c.pid || r < 0) {
        c.exited = true;
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, &status, 0);
        c.exited = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (c.stdout_fd >= 0) ::close(c.stdout_fd);
    c.stdout_fd = -1;
  }
}

}  // namespace edgestate::demo
