#pragma once
// How many worker restarts the farm allows in a sliding window, and a short log of why they happened.
//
// Per-slot back-off (100 ms doubling to 10 s) keeps one crashing slot from spinning; the budget keeps
// the whole farm from spinning when every slot crashes (a bad --import, an env that kills its worker
// on every step): once `limit` restarts happened within `window`, further restarts wait until the
// oldest leaves the window.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "broker/clock.hpp"

namespace gymfarm::broker {

struct RestartEvent {
  TimePoint at{};
  std::size_t worker = 0;
  std::string reason;
};

// A restart's reason as one of a few stable names (`timeout`, `heartbeat_lost`, `start_timeout`,
// `link_stuck`, `oversized_reply`, `fork_failed`, `zygote_exited`, `cpu_limit`, `killed_sigkill`
// and the like, `exit_code_N`, `other`): the reasons themselves carry numbers, these do not grow.
std::string restart_reason_class(std::string_view reason);

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
  // Every restart recorded since the farm started, by restart_reason_class, and their sum.
  const std::map<std::string, uint64_t, std::less<>>& totals() const { return totals_; }
  uint64_t total() const { return total_; }

 private:
  std::size_t limit_;  // 0 = unlimited
  Duration window_;
  std::deque<TimePoint> window_starts_;
  std::deque<RestartEvent> log_;
  std::map<std::string, uint64_t, std::less<>> totals_;
  uint64_t total_ = 0;
};

}  // namespace gymfarm::broker
