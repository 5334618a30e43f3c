#pragma once
// The loop's deadlines, judged on the injected clock: a request past its deadline is answered
// `timeout` and its worker killed; an instance of a sessionless client (the gateway's REST dialects)
// without requests for --idle-ttl is closed; a session whose lease ran out ends. What to do about
// each is the broker's (DeadlineActions), so the whole check runs on a ManualClock in unit tests
// (tests/unit/broker/test_deadlines.cpp).
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "broker/admission.hpp"
#include "broker/clock.hpp"
#include "broker/sessions.hpp"
#include "broker/worker_registry.hpp"
#include "protocol/error.hpp"

namespace gymfarm::broker {

struct DeadlineOptions {
  Duration step_timeout = std::chrono::seconds(10);
  Duration make_timeout = std::chrono::seconds(60);
  Duration idle_ttl{};  // zero: never
  Duration session_lease = std::chrono::seconds(10);
  Duration lease_check_interval = std::chrono::milliseconds(200);  // leases are checked this often
};

// The `timeout` answer to a `verb` request that ran past `deadline` on worker process `pid`, whose
// worker is killed; and the reason the kill is logged and tombstoned with. One wording for the
// socket path (Deadlines::check) and the slabs' scan (broker.cpp).
protocol::Error timeout_error(std::string_view verb, Duration deadline, int pid);
std::string timeout_kill_reason(std::string_view verb, Duration deadline);

class DeadlineActions {
 public:
  virtual ~DeadlineActions() = default;
  virtual void fail(const Request& r, const protocol::Error& e) = 0;
  virtual void kill_worker(std::size_t w, std::string why) = 0;
  virtual void close_idle(std::size_t w, const std::string& instance) = 0;
  virtual void end_session(const std::string& key, const std::string& how) = 0;
};

class Deadlines {
 public:
  using Log = std::function<void(const std::string&)>;
  Deadlines(WorkerRegistry& registry, const SessionTable& sessions, const Admission& admission, const Clock& clock,
            DeadlineOptions options, Log log = {})
      : registry_(registry),
        sessions_(sessions),
        admission_(admission),
        clock_(clock),
        opt_(options),
        log_(std::move(log)) {}

  const Clock& clock() const { return clock_; }
  // How long a request with this verb may run on its worker.
  Duration timeout_for(std::string_view verb) const;
  // Everything that came due by the clock's now, in this order: timed-out requests, idle
  // instances, expired leases.
  void check(DeadlineActions& act);

 private:
  WorkerRegistry& registry_;
  const SessionTable& sessions_;
  const Admission& admission_;
  const Clock& clock_;
  DeadlineOptions opt_;
  Log log_;
  TimePoint next_lease_check_{};
};

}  // namespace gymfarm::broker
