#include "worker/slab_server.hpp"

#include <poll.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>

#include "protocol/frames.hpp"
#include "protocol/step_vec.hpp"

namespace gymfarm::worker {

namespace off = shm::off;
using Clock = std::chrono::steady_clock;

namespace {

// How often the spin looks at the link and yields the core, in turns of about 50-100 ns.
constexpr unsigned kLinkEvery = 32;
constexpr unsigned kYieldEvery = 32 * 16;

}  // namespace

SlabServer::~SlabServer() {
  for (auto& s : live_) release(s);
  for (auto& [id, s] : granted_) release(s);
}

void SlabServer::release(Served& s) {
  if (s.doorbell >= 0) ::close(s.doorbell);
  s.doorbell = -1;
  s.slab = shm::Slab();
}

void SlabServer::on_grant(const std::string& instance, const std::string& owner, int memfd, int doorbell) {
  Served s;
  s.instance = instance;
  s.owner = owner;
  std::string err;
  const bool ok = memfd >= 0 && doorbell >= 0 && s.slab.map(memfd, err);
  if (memfd >= 0) ::close(memfd);  // the mapping keeps the memory
  if (!ok) {
    if (doorbell >= 0) ::close(doorbell);
    return;
  }
  s.doorbell = doorbell;
  if (auto it = granted_.find(instance); it != granted_.end()) release(it->second);
  granted_[instance] = std::move(s);
}

void SlabServer::made(const std::string& instance, bool ok) {
  auto it = granted_.find(instance);
  if (it == granted_.end()) return;
  Served s = std::move(it->second);
  granted_.erase(it);
  if (!ok) return release(s);
  s.slab.u32(off::kState).store(static_cast<uint32_t>(shm::State::Attached), std::memory_order_release);
  live_.push_back(std::move(s));
}

void SlabServer::closed(const std::string& instance, const std::string& error_body) {
  spilled_.erase(instance);
  auto it = std::find_if(live_.begin(), live_.end(), [&](const Served& s) { return s.instance == instance; });
  if (it == live_.end()) return;
  shm::Slab& slab = it->slab;
  slab.u32(off::kState).store(static_cast<uint32_t>(shm::State::Dead), std::memory_order_release);
  if (slab.pending()) {
    const uint32_t seq = slab.u32(off::kReqSeq).load(std::memory_order_acquire);
    // A StepVec's other envs may live on: refused, it goes over the socket, which answers each row
    if (slab.u32(off::kReqVerb).load(std::memory_order_relaxed) == static_cast<uint32_t>(shm::Verb::StepVec)) {
      refuse(slab, seq);
    } else {
      slab.reply(seq, shm::Status::Err, error_body);
    }
  }
  release(*it);
  live_.erase(it);
}

std::optional<SlabReply> SlabServer::take_spilled(const std::string& instance) {
  auto it = spilled_.find(instance);
  if (it == spilled_.end()) return std::nullopt;
  SlabReply r = std::move(it->second);
  spilled_.erase(it);
  return r;
}

bool SlabServer::any_pending() const {
  return std::any_of(live_.begin(), live_.end(), [](const Served& s) { return s.slab.pending(); });
}

void SlabServer::refuse(shm::Slab& slab, uint32_t seq) {
  slab.u32(off::kRepStatus).store(static_cast<uint32_t>(shm::Status::Refused), std::memory_order_relaxed);
  slab.u32(off::kRepLen).store(0, std::memory_order_relaxed);
  slab.publish(seq);
}

SlabServer::Served* SlabServer::find(std::string_view instance) {
  auto it = std::find_if(live_.begin(), live_.end(), [&](const Served& s) { return s.instance == instance; });
  return it == live_.end() ? nullptr : &*it;
}

std::optional<SlabServer::VecRun> SlabServer::vec_run(std::string_view body, const Served& posted_in) {
  if (posted_in.owner.empty()) return std::nullopt;
  auto share = protocol::decode_vec_share(body);
  if (!share) return std::nullopt;
  VecRun run;
  bool among = false;  // the slab it came in is one of its envs' (its step time and spills are theirs)
  for (const auto& i : share->instances) {
    Served* s = find(i);
    if (s == nullptr || s->owner != posted_in.owner) return std::nullopt;
    among = among || s == &posted_in;
    run.members.push_back(s);
  }
  if (!among) return std::nullopt;
  run.body = protocol::encode_vec_share(share->instances, std::move(share->actions),
                                        share->autoreset ? &*share->autoreset : nullptr);
  return run;
}

std::size_t SlabServer::serve(const Handler& handle) {
  std::size_t served = 0;
  for (std::size_t i = 0; i < live_.size(); ++i) {
    shm::Slab& slab = live_[i].slab;
    if (!slab.pending()) continue;
    const uint32_t seq = slab.u32(off::kReqSeq).load(std::memory_order_acquire);
    const uint32_t v = slab.u32(off::kReqVerb).load(std::memory_order_relaxed);
    spin_hint_ = slab.u32(off::kWorkerSpin).load(std::memory_order_relaxed) != 0;
    const bool reset = v == static_cast<uint32_t>(shm::Verb::Reset);
    const bool raw = v == static_cast<uint32_t>(shm::Verb::StepRaw);
    const bool vec = v == static_cast<uint32_t>(shm::Verb::StepVec);
    const bool step = raw || v == static_cast<uint32_t>(shm::Verb::Step);
    std::string_view body;
    const auto started = Clock::now();
    SlabReply r;
    std::vector<Served*> members;
    if (vec) {
      // decoded once from a copy out of the client's reach; what runs is re-encoded from what was checked
      auto run = slab.request(body) ? vec_run(std::string(body), live_[i]) : std::nullopt;
      if (!run) {  // nothing runs: the client sends it over the socket
        refuse(slab, seq);
        ++served;
        continue;
      }
      members = std::move(run->members);
      r = handle(protocol::verb::kStepVec, "", run->body, {});
    } else if (!slab.request(body) || (!step && !reset)) {
      r = handle("", live_[i].instance, "", {});  // answered as the socket path answers an unknown verb
    } else {
      r = handle(reset ? std::string_view("reset") : std::string_view("step"), live_[i].instance, body,
                 raw ? std::span<char>(slab.reply_area(), slab.reply_capacity()) : std::span<char>());
    }
    const auto ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started).count());
    const uint64_t old = slab.u64(off::kStepNs).load(std::memory_order_relaxed);
    // Down fast, up slowly: one slow request (a first reset's env checker, say) does not make the
    // clients of a quick env sleep or leave the gateway's I/O thread for the next thirty.
    slab.u64(off::kStepNs)
        .store(old == 0   ? ns
               : ns < old ? (old + ns) / 2
                          : (old * 7 + ns) / 8,
               std::memory_order_relaxed);
    if (r.ok && step) slab.u64(off::kSteps).fetch_add(1, std::memory_order_relaxed);
    // a step_vec counts a step for each env named, in that env's slab (as the socket path counts
    // its rows), so the broker sees each instance used
    if (r.ok && vec)
      for (Served* m : members) m->slab.u64(off::kSteps).fetch_add(1, std::memory_order_relaxed);
    if (raw && r.raw > 0 && r.raw <= slab.reply_capacity()) {  // laid out in the reply area already
      slab.u32(off::kRepStatus).store(static_cast<uint32_t>(shm::Status::OkRaw), std::memory_order_relaxed);
      slab.u32(off::kRepLen).store(static_cast<uint32_t>(r.raw), std::memory_order_relaxed);
      slab.publish(seq);
    } else if (!slab.reply(seq, r.ok ? shm::Status::Ok : shm::Status::Err, r.body)) {
      // Too large for the reply area: kept for the client's `spilled` request over the socket.
      slab.u32(off::kRepStatus).store(static_cast<uint32_t>(shm::Status::Spilled), std::memory_order_relaxed);
      slab.u32(off::kRepLen)
          .store(static_cast<uint32_t>(std::min<std::size_t>(r.body.size(), UINT32_MAX)), std::memory_order_relaxed);
      spilled_[live_[i].instance] = std::move(r);
      slab.publish(seq);
    }
    ++served;
  }
  return served;
}

void SlabServer::sleeping(bool on) {
  for (auto& s : live_) s.slab.u32(off::kWorkerSleeping).store(on ? 1 : 0, std::memory_order_seq_cst);
}

SlabServer::Event SlabServer::wait(transport::StreamConn& link, transport::Frames& in, std::chrono::microseconds spin,
                                   std::chrono::milliseconds wait) {
  using Read = transport::StreamConn::Read;
  auto from = [](Read r) {
    switch (r) {
      case Read::Message: return Event::Message;
      case Read::Closed: return Event::Closed;
      case Read::TooLarge: return Event::TooLarge;
      case Read::Nothing: break;
    }
    return Event::Nothing;
  };
  if (live_.empty()) return from(link.wait(in, spin, wait));  // no slabs: the link's own wait
  if (const Read r = link.next(in); r != Read::Nothing) return from(r);
  if (any_pending()) return Event::Slab;
  pollfd link_fd{link.fd(), POLLIN, 0};
  // A client that steps many envs at once says so (worker_spin 0): its workers sleep between
  // steps instead of busy-polling side by side on a few cores.
  if (spin.count() > 0 && spin_hint_ && spin_policy_.should_spin()) {
    // The spin stays in user space: the slabs are memory, read each turn; the link (a system
    // call) is looked at every kLinkEvery turns and the core offered to a runnable process every
    // kYieldEvery. A step run between turns that each enter the kernel twice starts with the
    // kernel's code and data in the caches and branch predictors its env had warmed: in our
    // timings an env stepped through the farm ran 10-30% slower than the same loop run inside the
    // worker, which is as fast as in process (docs/benchmarks.md).
    const auto end = Clock::now() + spin;
    for (unsigned turn = 1;; ++turn) {
      if (any_pending()) {
        spin_policy_.spun(true);
        return Event::Slab;
      }
      if (turn % kLinkEvery == 0) {
        if (::poll(&link_fd, 1, 0) > 0) {
          spin_policy_.spun(true);
          return from(link.next(in));
        }
        if (turn % kYieldEvery == 0) sched_yield();  // a runnable process on this core goes first
        if (Clock::now() >= end) break;
      }
      shm::cpu_relax();
    }
    spin_policy_.spun(false);
  }
  // Sleep on the link and the doorbells. worker_sleeping is set (seq_cst) before the last look at
  // the slabs: a client that posts after that look sees it and rings.
  sleeping(true);
  if (any_pending()) {
    sleeping(false);
    return Event::Slab;
  }
  std::vector<pollfd> fds{link_fd};
  for (const auto& s : live_) fds.push_back({s.doorbell, POLLIN, 0});
  ::poll(fds.data(), fds.size(), static_cast<int>(wait.count()));
  sleeping(false);
  for (std::size_t i = 1; i < fds.size(); ++i) {
    uint64_t rang = 0;
    if (fds[i].revents & POLLIN) {
      if (::read(fds[i].fd, &rang, sizeof rang) < 0) {
        // nothing to drain
      }
    }
  }
  if (const Read r = link.next(in); r != Read::Nothing) return from(r);
  return any_pending() ? Event::Slab : Event::Nothing;
}

}  // namespace gymfarm::worker
