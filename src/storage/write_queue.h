// WriteQueue<Op>: the hand-off from request threads to the single writer thread that makes
// group commit possible. Producers append; the writer takes what queued since its last batch
// (the oldest first, up to a bound), so every write that arrived during an fdatasync shares
// the next one.
//
// Thread-safety: Push and Close from any thread; PopAll from exactly one consumer thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <iterator>
#include <mutex>
#include <vector>

namespace edgestate::storage {

template <typename Op>
class WriteQueue {
 public:
  // Queues `op` and returns true; returns false (leaving `op` untouched) once Close was called.
  bool Push(Op&& op) {
    bool wake;
    {
      std::lock_guard lock(mu_);
      if (closed_) return false;
      queue_.push_back(std::move(op));
      wake = consumer_waiting_ && queue_.size() >= wake_at_;
    }
    if (wake) cv_.notify_one();
    return true;
  }

  // Waits until ops are queued, `deadline` passes, or the queue is closed; then, when
  // `gather` > 1, keeps waiting up to `linger` for the queue to reach `gather` ops (a commit
  // delay, as PostgreSQL's commit_delay: under load a short wait fills the batch, and one
  // fdatasync then serves more writes); then moves the queued ops into *out (which must be
  // empty), the oldest first, at most `max` of them (0: all). Returns false only when the
  // queue is closed and nothing is left, true otherwise (*out may be empty after a timeout).
  bool PopAll(std::vector<Op>* out, std::chrono::steady_clock::time_point deadline,
              size_t gather = 1, std::chrono::microseconds linger = {}, size_t max = 0) {
    std::unique_lock lock(mu_);
    while (queue_.empty() && !closed_) {
      if (!Wait(lock, deadline, 1)) break;
    }
    if (!queue_.empty() && gather > 1) {
      auto until = std::chrono::steady_clock::now() + linger;
      while (queue_.size() < gather && !closed_) {
        if (!Wait(lock, until, gather)) break;
      }
    }
    if (queue_.empty()) return !closed_;
    if (max == 0 || queue_.size() <= max) {
      out->swap(queue_);
      return true;
    }
    out->reserve(max);
    auto end = queue_.begin() + static_cast<std::ptrdiff_t>(max);
    std::move(queue_.begin(), end, std::back_inserter(*out));
    queue_.erase(queue_.begin(), end);
    return true;
  }

  // Rejects later pushes; PopAll still drains what is queued.
  void Close() {
    {
      std::lock_guard lock(mu_);
      closed_ = true;
    }
    cv_.notify_all();
  }

 private:
  // Waits for a push that brings the queue to `wake_at` ops; false on timeout.
  bool Wait(std::unique_lock<std::mutex>& lock, std::chrono::steady_clock::time_point until,
            size_t wake_at) {
    consumer_waiting_ = true;
    wake_at_ = wake_at;
    std::cv_status st = cv_.wait_until(lock, until);
    consumer_waiting_ = false;
    return st == std::cv_status::no_timeout;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Op> queue_;          // GUARDED_BY(mu_)
  bool closed_ = false;            // GUARDED_BY(mu_)
  bool consumer_waiting_ = false;  // GUARDED_BY(mu_)
  size_t wake_at_ = 1;             // GUARDED_BY(mu_)
};

}  // namespace edgestate::storage
