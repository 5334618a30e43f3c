#pragma once
// The pool's supervision: starting workers (through a WorkerLauncher), growing the pool on demand
// up to its bound, retiring grown workers idle past the grace, the bookkeeping when a worker dies
// (back-off, the restart budget), and killing workers that are silent, with the reason kept for
// the exit's description. It reads time only from the injected clock, so all of it runs on a
// ManualClock with a fake launcher (tests/unit/broker/test_pool_supervisor.cpp).
//
// The broker keeps what concerns requests: it answers a dead worker's requests before telling
// the supervisor (gone() clears the slot), and sends `bye` to the workers retire_idle() returns.
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/clock.hpp"
#include "broker/heartbeats.hpp"
#include "broker/restart_budget.hpp"
#include "broker/worker_launcher.hpp"
#include "broker/worker_registry.hpp"

namespace gymfarm::broker {

struct PoolOptions {
  std::size_t workers = 1;      // the warm pool: never retired
  std::size_t max_workers = 1;  // the pool grows on demand up to this
  Duration idle_grace = std::chrono::seconds(60);
  Duration heartbeat_timeout = std::chrono::seconds(3);
  Duration startup_timeout = std::chrono::seconds(60);
  HeartbeatPolicy heartbeat_policy{};
  bool verbose = false;
};

class PoolSupervisor {
 public:
  using Log = std::function<void(const std::string&)>;
  PoolSupervisor(WorkerRegistry& registry, const Clock& clock, WorkerLauncher& launcher, RestartBudget& budget,
                 PoolOptions options, Log log = {});

  const PoolOptions& options() const { return opt_; }
  // The back-off before a slot that failed `failures` times in a row starts again: 100 ms doubling to 10 s.
  static Duration backoff(int failures);

  // Starts a worker in slot i (Dead). `restart`: its process died and is replaced (false: the pool
  // starts or grows). A launch that fails leaves the slot Dead with a back-off.
  void spawn(std::size_t i, bool restart = true);
  // One more worker, while the pool wants fewer than max_workers: the slot, or nullopt at the bound.
  std::optional<std::size_t> grow();
  // Grown workers idle for the grace: no longer wanted, Stopping. The broker sends them `bye`.
  std::vector<std::size_t> retire_idle(TimePoint now);
  // Starts the wanted Dead slots whose back-off passed; restarts within the budget only (the others
  // wait until the budget allows one).
  void respawn_due(TimePoint now);

  // Worker w's process ended (`reason`: its exit, described). A death before the worker was ready
  // counts towards its back-off; a graceful one (Stopping) or one after it served does not.
  void gone(std::size_t w, std::string reason);
  // The zygote answered w's fork request with no process.
  void fork_failed(std::size_t w);

  // Kills worker w with SIGKILL and keeps why, for its exit's description.
  void kill(std::size_t w, std::string why);
  // A process killed by the broker for `why` (the zygote).
  void note_kill(int pid, std::string why) { kill_reasons_[pid] = std::move(why); }
  // Why the broker killed this pid (nullptr: it did not, or its exit was already taken).
  const std::string* kill_reason(int pid) const;
  std::optional<std::string> take_kill_reason(int pid);
  // Kills the live workers whose heartbeats stopped (or that did not start in time); returns them.
  std::vector<std::size_t> kill_silent(TimePoint now);

 private:
  void log(const std::string& m) const {
    if (log_) log_(m);
  }
  WorkerRegistry& registry_;
  const Clock& clock_;
  WorkerLauncher& launcher_;
  RestartBudget& budget_;
  PoolOptions opt_;
  Log log_;
  std::unordered_map<int, std::string> kill_reasons_;  // pid -> why the broker killed it
  bool budget_spent_logged_ = false;
};

}  // namespace gymfarm::broker
