#include "broker/deadlines.hpp"

#include "protocol/frames.hpp"

namespace gymfarm::broker {

using protocol::ErrorCode;
using protocol::Value;

Duration Deadlines::timeout_for(std::string_view v) const {
  return verb_timeout(v, opt_.step_timeout, opt_.make_timeout);
}

namespace {
int64_t milliseconds(Duration d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); }
}  // namespace

protocol::Error timeout_error(std::string_view verb, Duration deadline, int pid) {
  const auto ms = milliseconds(deadline);
  Value d(protocol::Map{});
  d.set("verb", std::string(verb));
  d.set("deadline_ms", ms);
  d.set("pid", pid);
  return protocol::Error{
      ErrorCode::Timeout,
      "'" + std::string(verb) + "' did not finish within " + std::to_string(ms) + " ms; the worker was killed",
      std::move(d)};
}

std::string timeout_kill_reason(std::string_view verb, Duration deadline) {
  return "'" + std::string(verb) + "' timed out after " + std::to_string(milliseconds(deadline)) + " ms";
}

void Deadlines::check(DeadlineActions& act) {
  const auto now = clock_.now();
  for (auto w : registry_.expired(now)) {
    auto& s = registry_.slot(w);
    InFlight in = std::move(*s.in_flight);
    s.in_flight.reset();
    const Duration deadline = timeout_for(in.request.verb);
    act.fail(in.request, timeout_error(in.request.verb, deadline, s.pid));
    if (log_) log_("worker " + std::to_string(w) + " timed out in '" + in.request.verb + "', killing it");
    act.kill_worker(w, timeout_kill_reason(in.request.verb, deadline));
  }
  if (opt_.idle_ttl.count() > 0) {  // sessionless clients: the gateway's REST dialects
    for (const auto& [w, instance] : registry_.idle_instances(now, opt_.idle_ttl)) {
      const auto* owner = admission_.owner(instance);
      if (!owner || principal(owner->client) == principal(client_key(ClientPath::Inproc, ""))) {
        act.close_idle(w, instance);
      }
    }
  }
  if (now >= next_lease_check_) {
    next_lease_check_ = now + opt_.lease_check_interval;
    const auto expired = sessions_.expired(now, [this](const std::string& c) { return admission_.in_flight(c) > 0; });
    for (const auto& key : expired) {
      act.end_session(
          key, "stopped renewing its lease (" +
                   std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(opt_.session_lease).count()) +
                   " ms)");
    }
  }
}

}  // namespace gymfarm::broker
