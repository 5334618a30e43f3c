#include "broker/worker_registry.hpp"

#include <algorithm>

namespace gymfarm::broker {

const char* to_string(WorkerState s) {
  switch (s) {
    case WorkerState::Dead: return "dead";
    case WorkerState::Starting: return "starting";
    case WorkerState::Idle: return "idle";
    case WorkerState::Assigned: return "assigned";
    case WorkerState::Stopping: return "stopping";
  }
  return "?";
}

WorkerRegistry::WorkerRegistry(std::size_t workers, const Clock& clock, std::size_t capacity)
    : clock_(clock), capacity_(capacity ? capacity : 1), slots_(workers) {
  // the deque's slots never move, so the broker may hold references to them while the pool grows
  for (std::size_t i = 0; i < workers; ++i) slots_[i].index = i;
}

std::optional<std::size_t> WorkerRegistry::by_identity(const std::string& identity) const {
  auto it = identities_.find(identity);
  if (it != identities_.end()) return it->second;
  if (identity.size() > 3 && identity.compare(identity.size() - 3, 3, "#hb") == 0) {
    it = identities_.find(identity.substr(0, identity.size() - 3));
    if (it != identities_.end()) return it->second;
  }
  return std::nullopt;
}

std::size_t WorkerRegistry::grow() {
  for (auto& s : slots_) {
    if (!s.wanted && s.state == WorkerState::Dead) {
      s.wanted = true;
      s.consecutive_failures = 0;
      return s.index;
    }
  }
  slots_.emplace_back();
  slots_.back().index = slots_.size() - 1;
  return slots_.back().index;
}

std::size_t WorkerRegistry::wanted() const {
  std::size_t n = 0;
  for (const auto& s : slots_) n += s.wanted;
  return n;
}

bool WorkerRegistry::spawned(std::size_t i, std::string identity, int pid, bool restart) {
  auto& s = slots_.at(i);
  if (s.state != WorkerState::Dead) return false;
  identities_.erase(s.identity);
  s.identity = std::move(identity);
  identities_[s.identity] = i;
  s.pid = pid;
  s.heard = false;
  s.heartbeat_period = s.heartbeat_allowance = kBaseHeartbeatPeriod;
  s.unsendable_since = {};
  if (s.spawns++ > 0 && restart) ++s.restarts;
  s.state = WorkerState::Starting;
  s.since = s.last_heartbeat = clock_.now();
  return true;
}

bool WorkerRegistry::ready(std::size_t i) {
  auto& s = slots_.at(i);
  if (s.state != WorkerState::Starting) return false;
  s.state = WorkerState::Idle;
  s.was_ready = true;
  s.since = s.last_heartbeat = clock_.now();
  return true;
}

bool WorkerRegistry::assign(std::size_t i, std::string instance, std::string env_id) {
  auto& s = slots_.at(i);
  const bool room = s.state == WorkerState::Idle || (s.state == WorkerState::Assigned && s.hosted.size() < capacity_);
  if (!room) return false;
  if (s.state == WorkerState::Idle) {
    s.steps = 0;
    s.since = clock_.now();
  }
  s.state = WorkerState::Assigned;
  s.hosted.push_back({std::move(instance), std::move(env_id), clock_.now()});
  return true;
}

bool WorkerRegistry::release(std::size_t i, const std::string& instance) {
  auto& s = slots_.at(i);
  if (s.state != WorkerState::Assigned) return false;
  auto it = std::find_if(s.hosted.begin(), s.hosted.end(), [&](const auto& h) { return h.instance == instance; });
  if (it == s.hosted.end()) return false;
  s.hosted.erase(it);
  if (s.hosted.empty()) {
    s.state = WorkerState::Idle;
    s.since = clock_.now();
  }
  s.consecutive_failures = 0;
  return true;
}

bool WorkerRegistry::stopping(std::size_t i) {
  auto& s = slots_.at(i);
  if (s.state == WorkerState::Dead || s.state == WorkerState::Stopping) return false;
  s.state = WorkerState::Stopping;
  s.since = clock_.now();
  return true;
}

bool WorkerRegistry::died(std::size_t i, std::string reason) {
  auto& s = slots_.at(i);
  if (s.state == WorkerState::Dead) return false;
  identities_.erase(s.identity);
  s.state = WorkerState::Dead;
  s.last_exit = std::move(reason);
  s.pid = 0;
  s.hosted.clear();
  s.in_flight.reset();
  s.queue.clear();
  s.since = clock_.now();
  return true;
}

std::optional<std::size_t> WorkerRegistry::worker_with_room() const {
  std::optional<std::size_t> best;
  for (const auto& s : slots_) {
    const bool room = s.state == WorkerState::Idle || (s.state == WorkerState::Assigned && s.hosted.size() < capacity_);
    if (room && (!best || s.hosted.size() < slots_[*best].hosted.size())) best = s.index;
  }
  return best;
}

std::size_t WorkerRegistry::count(WorkerState st) const {
  std::size_t n = 0;
  for (const auto& s : slots_) n += s.state == st;
  return n;
}

void WorkerRegistry::heartbeat(std::size_t i) {
  auto& s = slots_.at(i);
  s.last_heartbeat = clock_.now();
  s.heard = true;
}

bool WorkerRegistry::begin(std::size_t i, Request r, uint64_t rid, Duration timeout) {
  auto& s = slots_.at(i);
  if (s.in_flight || s.state == WorkerState::Dead || s.state == WorkerState::Starting) return false;
  touch(s, r);
  s.in_flight = InFlight{std::move(r), rid, clock_.now() + timeout};
  return true;
}

std::optional<InFlight> WorkerRegistry::finish(std::size_t i, uint64_t rid) {
  auto& s = slots_.at(i);
  if (!s.in_flight || s.in_flight->rid != rid) return std::nullopt;
  std::optional<InFlight> out = std::move(s.in_flight);
  s.in_flight.reset();
  touch(s, out->request);
  return out;
}

std::vector<std::size_t> WorkerRegistry::expired(TimePoint now) const {
  std::vector<std::size_t> out;
  for (const auto& s : slots_) {
    if (s.in_flight && s.state != WorkerState::Dead && now >= s.in_flight->deadline) out.push_back(s.index);
  }
  return out;
}

bool WorkerRegistry::needs_period(std::size_t i, Duration period) {
  auto& s = slots_.at(i);
  if (s.heartbeat_period != period) return true;
  s.heartbeat_allowance = period;  // it has beaten since it was told: the old period is over
  return false;
}

void WorkerRegistry::told(std::size_t i, Duration period) {
  auto& s = slots_.at(i);
  s.heartbeat_allowance = std::max(s.heartbeat_period, period);  // until it has heard, it may beat at the old one
  s.heartbeat_period = period;
}

void WorkerRegistry::excuse(Duration d, TimePoint now) {
  if (d <= Duration::zero()) return;
  for (auto& s : slots_) {
    if (s.state != WorkerState::Dead) s.last_heartbeat = std::min(now, s.last_heartbeat + d);
  }
}

std::vector<std::size_t> WorkerRegistry::silent(TimePoint now, Duration timeout, Duration startup_timeout,
                                                const HeartbeatPolicy& policy) const {
  std::vector<std::size_t> out;
  for (const auto& s : slots_) {
    if (s.state == WorkerState::Dead) continue;
    const bool starting = s.state == WorkerState::Starting;
    const bool quiet = (s.heard || !starting) &&
                       now - s.last_heartbeat > policy.allowed_silence(timeout, s.heartbeat_allowance);
    if (quiet || (starting && now - s.since > startup_timeout)) out.push_back(s.index);
  }
  return out;
}

void WorkerRegistry::touch(WorkerSlot& s, const Request& r) {
  const auto now = clock_.now();
  for (auto& h : s.hosted) {
    if (r.concerns(h.instance)) h.last_request = now;
  }
}

void WorkerRegistry::used(std::size_t w, const std::string& instance) {
  for (auto& h : slots_[w].hosted) {
    if (h.instance == instance) h.last_request = clock_.now();
  }
}

std::vector<std::pair<std::size_t, std::string>> WorkerRegistry::idle_instances(TimePoint now, Duration ttl) const {
  std::vector<std::pair<std::size_t, std::string>> out;
  for (const auto& s : slots_) {
    if (s.state != WorkerState::Assigned) continue;
    for (const auto& h : s.hosted) {
      if (now - h.last_request <= ttl) continue;
      auto busy = [&](const Request& r) { return r.concerns(h.instance); };
      if ((s.in_flight && busy(s.in_flight->request)) || std::any_of(s.queue.begin(), s.queue.end(), busy)) continue;
      out.emplace_back(s.index, h.instance);
    }
  }
  return out;
}

}  // namespace gymfarm::broker
