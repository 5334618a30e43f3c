#pragma once
// The pool of worker slots, their life-cycle state machine, in-flight requests and deadlines.
//
//   Dead --spawned--> Starting --ready--> Idle --assign--> Assigned --release--> Idle
//     ^                  |                  |                 |
//     +-------died-------+------died--------+------died-------+      (Stopping: graceful exit)
//
// A worker hosts up to `capacity` instances (--envs-per-worker; 1 by default): Assigned while it
// holds at least one. Requests to a worker run one at a time, in order.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/clock.hpp"
#include "broker/heartbeats.hpp"
#include "broker/request.hpp"

namespace gymfarm::broker {

enum class WorkerState { Dead, Starting, Idle, Assigned, Stopping };
const char* to_string(WorkerState s);

struct InFlight {
  Request request;
  uint64_t rid = 0;  // the broker's id for the worker hop
  TimePoint deadline{};
};

struct WorkerSlot {
  std::size_t index = 0;
  WorkerState state = WorkerState::Dead;
  std::string identity;
  int pid = 0;
  uint64_t spawns = 0;
  uint64_t restarts = 0;
  std::string last_exit;  // why the previous process of this slot ended
  struct Hosted {
    std::string instance;
    std::string env_id;
    TimePoint last_request{};  // when the instance last began or finished a request
  };
  std::vector<Hosted> hosted;  // the instances this worker holds
  uint64_t steps = 0;
  TimePoint since{};               // when the current state began
  TimePoint last_heartbeat{};      // its last heartbeat or other message (a reply counts as one)
  bool heard = false;              // a heartbeat came from the current process
  Duration heartbeat_period{};     // the period it was last told (zero: its own default, kBaseHeartbeatPeriod)
  Duration heartbeat_allowance{};  // the longest period it may still be beating at (silence is judged on it)
  TimePoint respawn_at{};          // back-off after crashes
  TimePoint unsendable_since{};    // when its pipe first refused the queued request (zero: it did not)
  int consecutive_failures = 0;    // deaths before reaching Idle or shortly after
  bool was_ready = false;          // some process of this slot reached Idle
  bool wanted = true;              // the pool wants a process here (false: retired, may be reused)
  std::optional<InFlight> in_flight;
  std::deque<Request> queue;
};

class WorkerRegistry {
 public:
  WorkerRegistry(std::size_t workers, const Clock& clock, std::size_t capacity = 1);
  std::size_t capacity() const { return capacity_; }

  std::size_t size() const { return slots_.size(); }
  WorkerSlot& slot(std::size_t i) { return slots_.at(i); }
  const WorkerSlot& slot(std::size_t i) const { return slots_.at(i); }
  // A deque: growing the pool leaves references to existing slots valid.
  const std::deque<WorkerSlot>& slots() const { return slots_; }
  // A slot for one more worker: a retired one if any (wanted again), else a new one at the end.
  std::size_t grow();
  // Slots the pool wants a process in.
  std::size_t wanted() const;

  // Heartbeat identities are "<identity>#hb".
  std::optional<std::size_t> by_identity(const std::string& identity) const;

  // State transitions; each returns false (and changes nothing) when not allowed from the current state.
  // Dead -> Starting; `restart` counts it as a restart of the slot (not for a slot the pool grew).
  bool spawned(std::size_t i, std::string identity, int pid, bool restart = true);
  bool ready(std::size_t i);                                             // Starting -> Idle
  bool assign(std::size_t i, std::string instance, std::string env_id);  // Idle/Assigned with room -> Assigned
  bool release(std::size_t i, const std::string& instance);              // -> Idle when it was the last one
  bool stopping(std::size_t i);                                          // any live -> Stopping
  bool died(std::size_t i, std::string reason);                          // any but Dead -> Dead

  // A ready worker with room for one more instance, the least loaded first (spreads over cores).
  std::optional<std::size_t> worker_with_room() const;
  std::size_t count(WorkerState s) const;

  void heartbeat(std::size_t i);
  // The heartbeat period the pool wants is `period`: true when worker i beats at another one and
  // must be told (then call told()). When it already has it, its allowance comes down to it.
  bool needs_period(std::size_t i, Duration period);
  void told(std::size_t i, Duration period);
  // The broker did not run for `d` (TurnLateness): no live worker's silence grows by it.
  void excuse(Duration d, TimePoint now);
  // Starts the request on the worker with a deadline; false if one is already in flight.
  bool begin(std::size_t i, Request r, uint64_t rid, Duration timeout);
  // Finishes the in-flight request whose rid matches.
  std::optional<InFlight> finish(std::size_t i, uint64_t rid);

  // Slots whose in-flight request passed its deadline.
  std::vector<std::size_t> expired(TimePoint now) const;
  // Live slots with no heartbeat for `timeout` (or `policy.missed_beats` of their period, where
  // longer) once one was heard, and Starting slots not ready within `startup_timeout` of `since`.
  std::vector<std::size_t> silent(TimePoint now, Duration timeout, Duration startup_timeout,
                                  const HeartbeatPolicy& policy = {}) const;
  // (worker, instance) pairs with nothing in flight or queued for the instance and no request for
  // longer than `ttl`.
  std::vector<std::pair<std::size_t, std::string>> idle_instances(TimePoint now, Duration ttl) const;
  // Instance `instance` of worker w was just used outside the broker's requests (its slab).
  void used(std::size_t w, const std::string& instance);

 private:
  void touch(WorkerSlot& s, const Request& r);

  const Clock& clock_;
  std::size_t capacity_;
  std::deque<WorkerSlot> slots_;
  std::unordered_map<std::string, std::size_t> identities_;
};

}  // namespace gymfarm::broker
