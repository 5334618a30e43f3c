#pragma once
// How many worker restarts the farm allows in a sliding window, and a short log of why they happened.
//
// Per-slot back-off (100 ms doubling to 10 s) keeps one crashing slot from spinning; the budget keeps
// the whole farm from spinning when every slot crashes (a bad --import, an env that kills its worker
// on every step): once `limit` restarts happened within `window`, further restarts wait until the
// oldest leaves the window.
#include <cstddef>
#include <deque>
#include <string>

#include "broker/clock.hpp"

namespace gymfarm::broker {

struct RestartEvent {
  TimePoint at{};
  std::size_t worker = 0;
  std::string reason;
};

class RestartBudget {
 public:
  RestartBudget(std::size_t limit, Duration window) : limit_(limit), window_(window) {}

  std::size_t limit() const { return limit_; }
  Duration window() const { return window_; }

  // Restarts counted in the window that ends at `now`.
  std::size_t used(TimePoint now) const;
  // True when one more restart fits at `now`.
  bool allows(TimePoint now) const { return limit_ == 0 || used(now) < limit_; }
  // When the next restart fits (now if it fits already).
  TimePoint next_allowed(TimePoint now) const;
  // Counts a restart and keeps it in the log (the last kLogSize).
  void record(TimePoint now, std::size_t worker, std::string reason);

  const std::deque<RestartEvent>& log() const { return log_; }
  static constexpr std::size_t kLogSize = 20;

 private:
  std::size_t limit_;  // 0 = unlimited
  Duration window_;
  std::deque<TimePoint> window_starts_;
  std::deque<RestartEvent> log_;
};

}  // namespace gymfarm::broker
