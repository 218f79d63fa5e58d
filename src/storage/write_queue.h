// WriteQueue<Op>: the hand-off from request threads to the single writer thread that makes
// group commit possible. Producers append; the writer takes everything queued since its last
// batch in one swap, so every write that arrived during an fdatasync shares the next one.
//
// Thread-safety: Push and Close from any thread; PopAll from exactly one consumer thread.
#pragma once

#include <chrono>
#include <condition_variable>
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
      wake = consumer_waiting_;
    }
    if (wake) cv_.notify_one();
    return true;
  }

  // Waits until ops are queued, `deadline` passes, or the queue is closed; then moves every
  // queued op into *out (which must be empty). Returns false only when the queue is closed
  // and nothing is left, true otherwise (*out may be empty after a timeout).
  bool PopAll(std::vector<Op>* out, std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(mu_);
    while (queue_.empty() && !closed_) {
      consumer_waiting_ = true;
      std::cv_status st = cv_.wait_until(lock, deadline);
      consumer_waiting_ = false;
      if (st == std::cv_status::timeout) break;
    }
    if (queue_.empty()) return !closed_;
    out->swap(queue_);
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
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Op> queue_;          // GUARDED_BY(mu_)
  bool closed_ = false;            // GUARDED_BY(mu_)
  bool consumer_waiting_ = false;  // GUARDED_BY(mu_)
};

}  // namespace edgestate::storage
