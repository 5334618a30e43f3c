#pragma once
// The gateway's pool of blocking threads: the dialects' handle() calls block on the farm (an env
// step may take seconds), so they run here, never on the I/O threads. Threads start on demand up
// to a cap; a thread idle for `idle_retire` ends; jobs beyond the cap wait in order.
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>

namespace gymfarm::frontends {

struct BlockingPoolOptions {
  std::size_t max_threads = 256;
  std::chrono::milliseconds idle_retire{30000};
  std::function<void()> thread_exit;  // runs on each pool thread as it ends (e.g. drops its farm client)
};

class BlockingPool {
 public:
  explicit BlockingPool(BlockingPoolOptions options = {});
  ~BlockingPool();  // stop(), waiting as long as it takes
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  // Queues a job; false (and the job is dropped) once stopping.
  bool post(std::function<void()> job);
  // Takes no more jobs, drops the queued ones, and waits up to `wait` for the running ones to end.
  // True when every thread has ended.
  bool stop(std::chrono::milliseconds wait = std::chrono::milliseconds::max());

  std::size_t threads() const;
  std::size_t idle() const;
  std::size_t queued() const;

 private:
  void run();

  BlockingPoolOptions opt_;
  mutable std::mutex mu_;
  std::condition_variable work_;
  std::condition_variable ended_;
  std::deque<std::function<void()>> queue_;
  std::size_t threads_ = 0;
  std::size_t idle_ = 0;
  bool stopping_ = false;
};

}  // namespace gymfarm::frontends
