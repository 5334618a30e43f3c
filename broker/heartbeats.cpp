#include "broker/heartbeats.hpp"

#include <algorithm>

namespace gymfarm::broker {

std::chrono::milliseconds HeartbeatPolicy::period(std::size_t workers) const {
  if (max_rate == 0 || workers == 0) return kBaseHeartbeatPeriod;
  // beats per period = workers; per second = workers * 1000 / period_ms <= max_rate
  const auto base = static_cast<std::size_t>(kBaseHeartbeatPeriod.count());
  const std::size_t need_ms = (workers * 1000 + max_rate - 1) / max_rate;
  const std::size_t steps = std::max<std::size_t>(1, (need_ms + base - 1) / base);
  return std::chrono::milliseconds(static_cast<long long>(std::min<std::size_t>(steps, 600) * base));
}

Duration HeartbeatPolicy::allowed_silence(Duration timeout, Duration period) const {
  return std::max(timeout, missed_beats * period);
}

Duration TurnLateness::turn(TimePoint now) {
  Duration excuse{};
  if (last_ != TimePoint{} && now - last_ > expected_ + slack_) excuse = now - last_ - expected_;
  last_ = now;
  excused_ += excuse;
  return excuse;
}

}  // namespace gymfarm::broker
