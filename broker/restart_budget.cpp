#include "broker/restart_budget.hpp"

namespace gymfarm::broker {

std::size_t RestartBudget::used(TimePoint now) const {
  std::size_t n = 0;
  for (auto t : window_starts_) n += now - t < window_;
  return n;
}

TimePoint RestartBudget::next_allowed(TimePoint now) const {
  if (allows(now)) return now;
  // The restarts in the window are the newest `limit`; the oldest of them leaves first.
  return window_starts_[window_starts_.size() - limit_] + window_;
}

void RestartBudget::record(TimePoint now, std::size_t worker, std::string reason) {
  while (!window_starts_.empty() && now - window_starts_.front() >= window_) window_starts_.pop_front();
  window_starts_.push_back(now);
  if (limit_ && window_starts_.size() > limit_) window_starts_.pop_front();
  log_.push_back({now, worker, std::move(reason)});
  if (log_.size() > kLogSize) log_.pop_front();
}

}  // namespace gymfarm::broker
