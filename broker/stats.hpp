#pragma once
// What `stats` answers: the pool's workers with their memory, the restart budget and its recent
// restarts, the pool's shape, the heartbeats and the broker's counters. No sockets: a report is
// built from the parts' state, so it is tested with a registry on a manual clock.
#include <cstdint>
#include <functional>
#include <string>

#include "broker/clock.hpp"
#include "broker/restart_budget.hpp"
#include "broker/worker_registry.hpp"
#include "protocol/value.hpp"

namespace gymfarm::broker {

// Resident and proportional set size of a process from /proc; 0 when it cannot be read (pid <= 0,
// a process that is gone).
long long proc_rss_bytes(int pid);
long long proc_pss_bytes(int pid);

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

  // Retired slots (no process, not wanted) are left out.
  protocol::Value report(const WorkerRegistry& registry, const RestartBudget& budget, std::size_t instances, Pool pool,
                         const Heartbeats& hb, TimePoint now, const std::string& frontend, int64_t pid) const;

 private:
  Memory rss_, pss_;
};

}  // namespace gymfarm::broker
