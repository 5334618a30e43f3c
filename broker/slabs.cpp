#include "broker/slabs.hpp"

#include <unistd.h>

namespace gymfarm::broker {

namespace off = shm::off;

SlabTable::~SlabTable() {
  for (auto& [id, e] : slabs_) close_fds(e);
}

void SlabTable::close_fds(Entry& e) {
  if (e.memfd >= 0) ::close(e.memfd);
  if (e.doorbell >= 0) ::close(e.doorbell);
  e.memfd = e.doorbell = -1;
}

std::vector<int> SlabTable::grant(const std::string& instance, std::size_t bytes, std::string& err) {
  int memfd = -1, doorbell = -1;
  if (!shm::Slab::create(bytes, memfd, doorbell, err)) return {};
  Entry e;
  if (!e.slab.map(memfd, err)) {
    ::close(memfd);
    ::close(doorbell);
    return {};
  }
  e.memfd = memfd;
  e.doorbell = doorbell;
  auto [it, fresh] = slabs_.insert_or_assign(instance, std::move(e));
  (void)fresh;
  return {it->second.memfd, it->second.doorbell};
}

std::vector<int> SlabTable::fds(const std::string& instance) const {
  auto it = slabs_.find(instance);
  if (it == slabs_.end() || it->second.memfd < 0) return {};
  return {it->second.memfd, it->second.doorbell};
}

void SlabTable::handed(const std::string& instance) {
  if (auto it = slabs_.find(instance); it != slabs_.end()) close_fds(it->second);
}

void SlabTable::end(const std::string& instance, const std::string& error_body) { end_entry(instance, &error_body); }

void SlabTable::end_entry(const std::string& instance, const std::string* error_body) {
  auto it = slabs_.find(instance);
  if (it == slabs_.end()) return;
  Entry& e = it->second;
  shm::Slab& s = e.slab;
  s.u32(off::kState).store(static_cast<uint32_t>(shm::State::Dead), std::memory_order_release);
  if (error_body && s.pending()) {
    const uint32_t seq = s.u32(off::kReqSeq).load(std::memory_order_acquire);
    const std::string& body = e.timeout_body ? *e.timeout_body : *error_body;
    if (!s.reply(seq, shm::Status::Err, body)) s.reply(seq, shm::Status::Err, std::string_view());
  } else {
    shm::futex_wake(s.word(off::kDoneSeq));  // a client asleep on it looks at the state
  }
  close_fds(e);
  slabs_.erase(it);
}

std::vector<SlabTable::Overdue> SlabTable::scan(
    TimePoint now, Duration timeout, const std::function<bool(const std::string&)>& alive,
    const std::function<void(const std::string&, uint64_t, uint64_t)>& on_progress,
    const std::function<std::string(const std::string&, shm::Verb)>& timeout_body) {
  std::vector<Overdue> overdue;
  std::vector<std::string> gone;
  for (auto& [instance, e] : slabs_) {
    if (!alive(instance)) {
      gone.push_back(instance);
      continue;
    }
    shm::Slab& s = e.slab;
    const uint32_t done = s.u32(off::kDoneSeq).load(std::memory_order_acquire);
    const uint64_t steps = s.u64(off::kSteps).load(std::memory_order_relaxed);
    // (steps move without done_seq for an env a StepVec in another of its session's slabs stepped)
    if (done != e.done_seen || steps != e.steps_seen) {
      on_progress(instance, static_cast<uint32_t>(done - e.done_seen), steps > e.steps_seen ? steps - e.steps_seen : 0);
      e.steps_seen = steps;
      e.done_seen = done;
    }
    if (!s.pending()) {
      e.waiting = false;
      continue;
    }
    const uint32_t seq = s.u32(off::kReqSeq).load(std::memory_order_acquire);
    if (!e.waiting || seq != e.waiting_seq) {
      e.waiting = true;
      e.waiting_seq = seq;
      e.since = now;
      continue;
    }
    if (!e.timeout_body && now - e.since > timeout) {
      const auto v = shm::verb_of(s.u32(off::kReqVerb).load(std::memory_order_relaxed));
      e.timeout_body = timeout_body(instance, v);
      overdue.push_back({instance, v});
    }
  }
  for (const auto& instance : gone) drop(instance);
  return overdue;
}

}  // namespace gymfarm::broker
