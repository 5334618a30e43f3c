#pragma once
// Heartbeats that scale with the pool: how often workers send them (the broker tells each worker
// its period in answer to a heartbeat), how long a silence kills a worker, and the broker's own
// lateness, which is excused from every worker's silence.
#include <chrono>
#include <cstddef>

#include "broker/clock.hpp"

namespace gymfarm::broker {

// What a worker uses until the broker tells it otherwise (worker/main.cpp starts with it).
constexpr auto kBaseHeartbeatPeriod = std::chrono::milliseconds(100);

struct HeartbeatPolicy {
  std::size_t max_rate = 2000;  // heartbeats per second from the whole pool (0: no bound)
  int missed_beats = 5;         // periods of silence allowed, where that is longer than the timeout

  // kBaseHeartbeatPeriod, longer in steps of it once `workers` heartbeats per period would
  // exceed max_rate: 2,000 workers at 2,000/s beat once a second.
  std::chrono::milliseconds period(std::size_t workers) const;
  // The silence that kills a worker beating every `period`: the heartbeat timeout, or
  // missed_beats periods where that is longer.
  Duration allowed_silence(Duration timeout, Duration period) const;
};

// The broker loop's own lateness. The loop wakes at least every `expected` (its poll interval);
// a turn that begins more than `expected + slack` after the previous one means the broker did not
// run (starved by the host, or busy in one long turn), so heartbeats it could not read in that
// time must not count as missed. Measured on the RunningClock, which already leaves out pauses
// longer than its max_turn.
class TurnLateness {
 public:
  TurnLateness(Duration expected, Duration slack) : expected_(expected), slack_(slack) {}
  // Called at the start of every turn: how much of the time since the previous turn to excuse.
  Duration turn(TimePoint now);
  Duration excused() const { return excused_; }  // in total, for stats

 private:
  Duration expected_;
  Duration slack_;
  TimePoint last_{};
  Duration excused_{};
};

}  // namespace gymfarm::broker
