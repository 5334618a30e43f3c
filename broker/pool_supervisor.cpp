#include "broker/pool_supervisor.hpp"

#include <signal.h>

#include <algorithm>

namespace gymfarm::broker {

PoolSupervisor::PoolSupervisor(WorkerRegistry& registry, const Clock& clock, WorkerLauncher& launcher,
                               RestartBudget& budget, PoolOptions options, Log log)
    : registry_(registry), clock_(clock), launcher_(launcher), budget_(budget), opt_(options), log_(std::move(log)) {}

Duration PoolSupervisor::backoff(int failures) {
  if (failures <= 0) return Duration::zero();
  const int shift = std::min(failures - 1, 7);
  return std::min<Duration>(std::chrono::milliseconds(100) * (1 << shift), std::chrono::seconds(10));
}

void PoolSupervisor::spawn(std::size_t i, bool restart) {
  auto& s = registry_.slot(i);
  const std::string identity = "w" + std::to_string(i) + "." + std::to_string(s.spawns);
  Launch l = launcher_.launch(i, identity);
  if (!l.ok()) {
    log("cannot start worker " + std::to_string(i) + ": " + l.error);
    s.consecutive_failures++;
    s.respawn_at = clock_.now() + backoff(s.consecutive_failures);
    s.last_exit = "spawn failed: " + l.error;
    return;
  }
  registry_.spawned(i, identity, l.pid, restart);  // pid 0: it comes with the zygote's answer
}

std::optional<std::size_t> PoolSupervisor::grow() {
  if (registry_.wanted() >= opt_.max_workers) return std::nullopt;
  const std::size_t w = registry_.grow();
  spawn(w, false);  // a failed launch is retried after its back-off (respawn_due)
  return w;
}

std::vector<std::size_t> PoolSupervisor::retire_idle(TimePoint now) {
  std::vector<std::size_t> out;
  std::size_t live = registry_.wanted();
  for (std::size_t i = registry_.size(); i-- > 0 && live > opt_.workers;) {
    auto& s = registry_.slot(i);
    if (!s.wanted || s.state != WorkerState::Idle || !s.queue.empty() || s.in_flight) continue;
    if (now - s.since < opt_.idle_grace) continue;
    if (opt_.verbose) log("worker " + std::to_string(i) + " idle for the grace period: retiring it");
    s.wanted = false;
    registry_.stopping(i);
    out.push_back(i);
    --live;
  }
  return out;
}

void PoolSupervisor::respawn_due(TimePoint now) {
  for (std::size_t i = 0; i < registry_.size(); ++i) {
    auto& s = registry_.slot(i);
    if (!s.wanted || s.state != WorkerState::Dead || s.respawn_at > now) continue;
    if (s.spawns > 0) {  // a restart, not the first start
      if (!budget_.allows(now)) {
        s.respawn_at = budget_.next_allowed(now);
        if (!budget_spent_logged_) {
          log("restart budget spent (" + std::to_string(budget_.limit()) + " restarts in " +
              std::to_string(std::chrono::duration_cast<std::chrono::seconds>(budget_.window()).count()) +
              " s); further restarts wait");
          budget_spent_logged_ = true;
        }
        continue;
      }
      budget_spent_logged_ = false;
      budget_.record(now, i, s.last_exit);
    }
    spawn(i);
  }
}

void PoolSupervisor::gone(std::size_t w, std::string reason) {
  auto& s = registry_.slot(w);
  if (s.state == WorkerState::Dead) return;
  if (s.state == WorkerState::Starting) {
    s.consecutive_failures++;
  } else if (s.state != WorkerState::Stopping) {
    s.consecutive_failures = 0;
  }
  registry_.died(w, std::move(reason));
  s.respawn_at = clock_.now() + backoff(s.consecutive_failures);
}

void PoolSupervisor::fork_failed(std::size_t w) {
  auto& s = registry_.slot(w);
  s.consecutive_failures++;
  registry_.died(w, "the zygote could not fork a worker");
  s.respawn_at = clock_.now() + backoff(s.consecutive_failures);
}

void PoolSupervisor::kill(std::size_t w, std::string why) {
  auto& s = registry_.slot(w);
  if (s.pid <= 0) return;
  kill_reasons_[s.pid] = std::move(why);
  launcher_.kill(s.pid, SIGKILL);
}

const std::string* PoolSupervisor::kill_reason(int pid) const {
  auto it = kill_reasons_.find(pid);
  return it == kill_reasons_.end() ? nullptr : &it->second;
}

std::optional<std::string> PoolSupervisor::take_kill_reason(int pid) {
  auto it = kill_reasons_.find(pid);
  if (it == kill_reasons_.end()) return std::nullopt;
  std::string why = std::move(it->second);
  kill_reasons_.erase(it);
  return why;
}

std::vector<std::size_t> PoolSupervisor::kill_silent(TimePoint now) {
  std::vector<std::size_t> out;
  for (auto w : registry_.silent(now, opt_.heartbeat_timeout, opt_.startup_timeout, opt_.heartbeat_policy)) {
    auto& s = registry_.slot(w);
    if (s.pid > 0 && !kill_reasons_.count(s.pid)) {
      log("worker " + std::to_string(w) + " is silent, killing it");
      kill(w, s.state == WorkerState::Starting ? "it did not start in time" : "its heartbeats stopped");
      out.push_back(w);
    }
  }
  return out;
}

}  // namespace gymfarm::broker
