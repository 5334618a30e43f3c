#pragma once
// The C++ side of a local client's shared-memory slabs (docs/protocol.md "Shared memory"): each
// instance's mapped slab (SlabEntry), the table of them (SlabRegistry, shared by the gateway's
// clients) and one step or reset through a slab (SlabCall): posted, polled, slept on, its reply
// read. Client::call takes every step and reset it can through a SlabCall; the gateway's I/O
// thread posts one itself (SlabCall::try_post), polls it briefly, and hands one the worker has
// not answered by then to a pool thread's Client::finish, so a slow or stopped env never holds
// the I/O thread.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <semaphore>
#include <string>
#include <string_view>
#include <unordered_map>

#include "protocol/value.hpp"
#include "shm/slab.hpp"

namespace gymfarm::client {

// One instance's slab and its doorbell; `turn` keeps one request at a time in it (a semaphore,
// not a mutex: a call posted on one thread may be finished on another).
struct SlabEntry {
  std::binary_semaphore turn{1};
  shm::Slab slab;
  int doorbell = -1;
  SlabEntry() = default;
  SlabEntry(const SlabEntry&) = delete;
  SlabEntry& operator=(const SlabEntry&) = delete;
  ~SlabEntry();
};

class SlabRegistry {
 public:
  std::shared_ptr<SlabEntry> find(const std::string& instance);
  // Adds one, and lets go of those whose instance the farm closed meanwhile (an idle instance it
  // reaped, say), whose slabs it marked dead.
  void add(const std::string& instance, std::shared_ptr<SlabEntry> e);
  void erase(const std::string& instance);
  void clear();

 private:
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<SlabEntry>> map_;
};

class SlabCall {
 public:
  // Posts `body` (the request's encoded body) as a step (a raw-capable one is not asked for: the
  // C++ side reads MessagePack replies) or reset, after the request before it in the slab is done;
  // nullptr, with nothing sent, when the instance has no attached slab or the body does not fit.
  static std::unique_ptr<SlabCall> post(const std::shared_ptr<SlabRegistry>& slabs, const std::string& instance,
                                        std::string_view verb, std::string body);
  // The same without waiting: nullptr also while another request is in the slab, and when the
  // worker's recent requests took `fast` or longer.
  static std::unique_ptr<SlabCall> try_post(const std::shared_ptr<SlabRegistry>& slabs, const std::string& instance,
                                            std::string_view verb, std::string body, std::chrono::nanoseconds fast);
  ~SlabCall();  // gives the slab's turn back
  SlabCall(const SlabCall&) = delete;
  SlabCall& operator=(const SlabCall&) = delete;

  bool done() const;
  // The worker's recent time per request (the slab's step_ns).
  std::chrono::nanoseconds recent() const;
  // Busy-polls for up to `budget`; true once the reply is there.
  bool spin(std::chrono::nanoseconds budget) const;
  // Sleeps until the reply is there (futex, 50 ms slices, `watch` after each): false when the
  // instance died unanswered (its tombstone answers over the socket); ClientError(Timeout) at
  // `deadline`.
  bool sleep(std::chrono::steady_clock::time_point deadline, const std::string& endpoint,
             const std::function<void()>& watch);
  // Once done(): the reply's body decoded, or the error it carries thrown as ClientError; nullopt
  // when the reply was too large for the slab (fetch it with `spilled`). A reply the slab cannot
  // hold together throws ClientError(Internal) and drops the slab.
  std::optional<protocol::Value> result();

  const std::string& instance() const { return instance_; }
  std::string_view verb() const { return verb_; }
  const std::string& body() const { return body_; }

 private:
  SlabCall(std::shared_ptr<SlabRegistry> slabs, std::shared_ptr<SlabEntry> entry, std::string instance,
           std::string_view verb, std::string body);
  // Writes the request and rings the worker when it sleeps; false (the turn given back) when the
  // slab is not attached or the body does not fit.
  bool send();

  std::shared_ptr<SlabRegistry> slabs_;
  std::shared_ptr<SlabEntry> entry_;
  std::string instance_;
  std::string_view verb_;  // one of protocol::verb's constants
  std::string body_;
  uint32_t seq_ = 0;
  bool has_turn_ = true;
};

}  // namespace gymfarm::client
