#pragma once
// What `stats` answers: the pool's workers with their memory, the restart budget and its recent
// restarts, every restart since start by reason, the pool's shape, the heartbeats and the broker's
// counters. No sockets: a report is
// built from the parts' state, so it is tested with a registry on a manual clock.
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "broker/admission.hpp"
#include "broker/clock.hpp"
#include "broker/restart_budget.hpp"
#include "broker/worker_registry.hpp"
#include "protocol/value.hpp"

namespace gymfarm::broker {

// Resident and proportional set size of a process from /proc; 0 when it cannot be read (pid <= 0,
// a process that is gone).
long long proc_rss_bytes(int pid);
long long proc_pss_bytes(int pid);

// The broker's answers to clients, counted by verb and error code ("ok" for a result), with their
// latency (received to answered) in fixed histogram buckets, and the env steps the workers made.
// Verbs outside the protocol's list count as "other" and error codes past kMaxCodes as "other", so
// what a client sends cannot grow these maps.
class RequestCounters {
 public:
  // Upper bounds in seconds of the latency buckets (Prometheus `le`); one more bucket is +Inf.
  static constexpr std::array<double, 14> kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                      0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0};
  static constexpr std::size_t kMaxCodes = 32;
  struct Verb {
    std::map<std::string, uint64_t, std::less<>> codes;   // error code (or "ok") -> answers
    std::array<uint64_t, kBuckets.size() + 1> buckets{};  // answers per bucket (not cumulative)
    double sum_s = 0;
    uint64_t count = 0;
  };

  void answered(std::string_view verb, std::string_view code, Duration took);
  // {verb: {codes: {code: n}, le: [bounds], buckets: [n...], sum_s, count}}
  protocol::Value to_value() const;
  const std::map<std::string, Verb, std::less<>>& verbs() const { return verbs_; }

  uint64_t env_steps = 0;  // steps the workers answered ok (step, step_batch parts, step_vec rows)

 private:
  std::map<std::string, Verb, std::less<>> verbs_;
};

class Stats {
 public:
  using Memory = std::function<long long(int pid)>;
  struct Pool {
    std::size_t warm = 0;  // --workers
    std::size_t max = 0;   // the pool's bound
  };
  struct Heartbeats {
    Duration period{};  // what workers are told to beat at
    std::size_t max_rate = 0;
    Duration excused{};  // the broker's own lateness, left out of silences
  };

  explicit Stats(Memory rss = proc_rss_bytes, Memory pss = proc_pss_bytes)
      : rss_(std::move(rss)), pss_(std::move(pss)) {}

  uint64_t requests = 0;    // client requests received
  uint64_t heartbeats = 0;  // heartbeat messages received
  RequestCounters answers;  // the dispatcher counts every answer here

  // Retired slots (no process, not wanted) are left out. With `owners`, each worker's `owners`
  // lists who made each of its `instances` (docs/protocol.md "stats").
  protocol::Value report(const WorkerRegistry& registry, const RestartBudget& budget, std::size_t instances, Pool pool,
                         const Heartbeats& hb, TimePoint now, const std::string& frontend, int64_t pid,
                         std::size_t sessions = 0, const Admission* owners = nullptr) const;

 private:
  Memory rss_, pss_;
};

}  // namespace gymfarm::broker
