#include "broker/restart_budget.hpp"

#include <cctype>

namespace gymfarm::broker {

std::string restart_reason_class(std::string_view r) {
  auto has = [r](std::string_view s) { return r.find(s) != std::string_view::npos; };
  if (has("timed out after")) return "timeout";
  if (has("its heartbeats stopped")) return "heartbeat_lost";
  if (has("did not start in time")) return "start_timeout";
  if (has("took no message")) return "link_stuck";
  if (has("over the message size limit")) return "oversized_reply";
  if (has("could not fork")) return "fork_failed";
  if (has("the zygote exited")) return "zygote_exited";
  if (has("(SIGXCPU)")) return "cpu_limit";
  if (const auto p = r.find("killed by signal "); p != std::string_view::npos) {
    std::string out = "killed_";
    const auto open = r.find("(SIG", p);
    std::size_t i = open == std::string_view::npos ? p + 17 : open + 1;  // the name, else the number
    if (open == std::string_view::npos) out += "signal_";
    for (; i < r.size() && out.size() < 24 && std::isalnum(static_cast<unsigned char>(r[i])); ++i)
      out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(r[i]))));
    return out;
  }
  if (const auto p = r.find("exited with code "); p != std::string_view::npos) {
    std::string out = "exit_code_";
    for (std::size_t i = p + 17; i < r.size() && i < p + 20 && std::isdigit(static_cast<unsigned char>(r[i])); ++i)
      out.push_back(r[i]);
    return out;
  }
  return "other";
}

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
  ++total_;
  auto c = totals_.find(restart_reason_class(reason));
  if (c == totals_.end()) c = totals_.emplace(restart_reason_class(reason), 0).first;
  ++c->second;
  log_.push_back({now, worker, std::move(reason)});
  if (log_.size() > kLogSize) log_.pop_front();
}

}  // namespace gymfarm::broker
