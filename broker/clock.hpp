#pragma once
// An injectable clock so deadlines and heartbeats can be tested without sleeping.
#include <chrono>

namespace gymfarm::broker {

using Duration = std::chrono::steady_clock::duration;
using TimePoint = std::chrono::steady_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

class SteadyClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
};

// Steady time that stands still while the broker does not run (SIGSTOP, a host that froze it, a
// starved VM): liveness and deadlines are judged on time in which the broker could have read
// heartbeats and replies. Every reading checks the gap since the previous one; the loop reads the
// clock at least every turn (it wakes every 50 ms), so a gap longer than `max_turn` is a pause and
// is left out, wherever in the turn the broker was stopped.
class RunningClock : public Clock {
 public:
  explicit RunningClock(Duration max_turn = std::chrono::seconds(1)) : max_turn_(max_turn) {}
  TimePoint now() const override {
    const TimePoint t = real();
    if (last_ != TimePoint{} && t - last_ > max_turn_) paused_ += t - last_;
    last_ = t;
    return t - paused_;
  }
  Duration paused() const { return paused_; }

 protected:
  virtual TimePoint real() const { return std::chrono::steady_clock::now(); }

 private:
  Duration max_turn_;
  mutable TimePoint last_{};
  mutable Duration paused_{};
};

class ManualClock final : public Clock {
 public:
  TimePoint now() const override { return now_; }
  void advance(Duration d) { now_ += d; }

 private:
  TimePoint now_{};
};

}  // namespace gymfarm::broker
