#pragma once
// The broker's side of the shared-memory data plane (docs/protocol.md "Shared memory"): the slabs
// it granted, one per instance made over the local socket with `shm`. It creates each slab, hands
// its descriptors to the worker (before the make) and to the client (with the make's reply), then
// keeps only a mapping, through which it watches for requests that run past the step deadline,
// counts the steps the worker answered there, and answers for a worker that died.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/clock.hpp"
#include "shm/slab.hpp"

namespace gymfarm::broker {

class SlabTable {
 public:
  SlabTable() = default;
  ~SlabTable();
  SlabTable(const SlabTable&) = delete;
  SlabTable& operator=(const SlabTable&) = delete;

  // A new slab of `bytes` for `instance`: its descriptors (memfd, doorbell), or empty with err set.
  std::vector<int> grant(const std::string& instance, std::size_t bytes, std::string& err);
  // Its descriptors while they have not been handed to the client (empty otherwise).
  std::vector<int> fds(const std::string& instance) const;
  // The client has the descriptors (or will not get them): the broker closes its own.
  void handed(const std::string& instance);

  // The instance is gone. A request that waits in its slab is answered with `error_body` (or the
  // timeout error the scan recorded for it), then the slab is marked dead and unmapped here.
  // Call it only once no process can still write the slab's reply: its worker is reaped.
  void end(const std::string& instance, const std::string& error_body);
  // The instance was closed with its worker alive (a close, a failed make, a session's end): the
  // slab is marked dead and unmapped here; its worker unmaps its own.
  void drop(const std::string& instance) { end_entry(instance, nullptr); }

  struct Overdue {
    std::string instance;
    shm::Verb verb;
  };
  // Looks at every slab: requests the workers answered since the last scan (`on_progress`: how
  // many, and the steps among them: an answer shows the worker alive, as a reply on its link does), requests
  // waiting longer than `timeout` (returned, once each; `timeout_body` makes the error they will be
  // answered with when their worker is gone), and slabs whose instance `alive` no longer knows
  // (dropped).
  std::vector<Overdue> scan(TimePoint now, Duration timeout, const std::function<bool(const std::string&)>& alive,
                            const std::function<void(const std::string&, uint64_t, uint64_t)>& on_progress,
                            const std::function<std::string(const std::string&, shm::Verb)>& timeout_body);
  std::size_t size() const { return slabs_.size(); }
  bool has(const std::string& instance) const { return slabs_.count(instance) != 0; }

 private:
  struct Entry {
    shm::Slab slab;
    int memfd = -1, doorbell = -1;
    uint64_t steps_seen = 0;
    uint32_t done_seen = 0;
    uint32_t waiting_seq = 0;  // the request the scan saw waiting, since `since`
    bool waiting = false;
    TimePoint since{};
    std::optional<std::string> timeout_body;  // the answer once its worker is gone
  };
  void close_fds(Entry& e);
  void end_entry(const std::string& instance, const std::string* error_body);

  std::unordered_map<std::string, Entry> slabs_;
};

}  // namespace gymfarm::broker
