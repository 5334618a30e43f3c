#include "frontends/blocking_pool.hpp"

#include <system_error>
#include <thread>

namespace gymfarm::frontends {

BlockingPool::BlockingPool(BlockingPoolOptions options) : opt_(std::move(options)) {
  if (opt_.max_threads == 0) opt_.max_threads = 1;
}

BlockingPool::~BlockingPool() { stop(); }

bool BlockingPool::post(std::function<void()> job) {
  std::unique_lock lock(mu_);
  if (stopping_) return false;
  queue_.push_back(std::move(job));
  if (queue_.size() > idle_ && threads_ < opt_.max_threads) {
    try {
      std::thread([this] { run(); }).detach();
      ++threads_;
    } catch (const std::system_error&) {
      // no thread now: the job waits for a running one (or the next post tries again)
    }
  }
  lock.unlock();
  work_.notify_one();
  return true;
}

void BlockingPool::run() {
  std::unique_lock lock(mu_);
  while (true) {
    ++idle_;
    const bool woken = work_.wait_for(lock, opt_.idle_retire, [&] { return stopping_ || !queue_.empty(); });
    --idle_;
    if (stopping_) break;
    if (queue_.empty()) {
      if (!woken) break;  // idle for idle_retire: retire
      continue;
    }
    auto job = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    job();
    job = nullptr;  // what the job holds is released off the lock
    lock.lock();
  }
  lock.unlock();
  if (opt_.thread_exit) opt_.thread_exit();
  lock.lock();
  --threads_;
  ended_.notify_all();
}

bool BlockingPool::stop(std::chrono::milliseconds wait) {
  std::deque<std::function<void()>> dropped;
  std::unique_lock lock(mu_);
  stopping_ = true;
  dropped.swap(queue_);
  work_.notify_all();
  bool done;
  if (wait == std::chrono::milliseconds::max()) {
    ended_.wait(lock, [&] { return threads_ == 0; });
    done = true;
  } else {
    done = ended_.wait_for(lock, wait, [&] { return threads_ == 0; });
  }
  lock.unlock();
  dropped.clear();  // the queued jobs' captures are released here, off the lock
  return done;
}

std::size_t BlockingPool::threads() const {
  std::lock_guard lock(mu_);
  return threads_;
}

std::size_t BlockingPool::idle() const {
  std::lock_guard lock(mu_);
  return idle_;
}

std::size_t BlockingPool::queued() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

}  // namespace gymfarm::frontends
