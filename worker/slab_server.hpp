#pragma once
// The worker's side of the shared-memory data plane (docs/protocol.md "Shared memory"): the slabs
// of its instances, the step and reset requests their clients post there, and a wait that watches
// the slabs and the worker's link together: it busy-polls both for the spin, then sleeps on the
// link and the slabs' doorbells.
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "shm/slab.hpp"
#include "transport/stream.hpp"

namespace gymfarm::worker {

struct SlabReply {
  bool ok = true;
  std::string body;
  std::size_t raw = 0;  // a StepRaw's reply laid out in the reply area by the handler: its length
};

class SlabServer {
 public:
  // (verb, instance, body, raw) -> the reply the socket path would send; a StepRaw's handler gets
  // the reply area as `raw` and may lay the reply out there (shm/slab.hpp), others get it empty.
  using Handler = std::function<SlabReply(std::string_view, std::string_view, std::string_view, std::span<char>)>;

  SlabServer() = default;
  ~SlabServer();
  SlabServer(const SlabServer&) = delete;
  SlabServer& operator=(const SlabServer&) = delete;

  // [slab, instance, owner] came with two descriptors (memfd, doorbell) on the link: maps the slab
  // for the make that follows. A slab that does not map is closed (the instance then uses the
  // socket). `owner` names the session the broker granted it to: a StepVec posted in a slab may
  // step only instances whose slabs here have the same, non-empty owner.
  void on_grant(const std::string& instance, const std::string& owner, int memfd, int doorbell);
  // The make succeeded: the slab is served from now on (its state says so to the client); it failed:
  // the slab is let go.
  void made(const std::string& instance, bool ok);
  // The instance is closed: its slab is let go (a request that waits in it is answered `error`).
  void closed(const std::string& instance, const std::string& error_body);
  bool empty() const { return live_.empty(); }

  // The reply kept for a request whose reply did not fit its slab (the `spilled` verb), taken once.
  std::optional<SlabReply> take_spilled(const std::string& instance);

  // Serves every request waiting in a slab; the number served.
  std::size_t serve(const Handler& handle);

  enum class Event { Message, Slab, Nothing, Closed, TooLarge };
  // Up to `wait` for a message on the link or a request in a slab, busy-polling both for the first
  // `spin` while recent requests came within it (with no slab: the link's own StreamConn::wait).
  Event wait(transport::StreamConn& link, transport::Frames& in, std::chrono::microseconds spin,
             std::chrono::milliseconds wait);

 private:
  struct Served {
    std::string instance;
    std::string owner;
    shm::Slab slab;
    int doorbell = -1;
  };
  bool any_pending() const;
  Served* find(std::string_view instance);
  // Answers request `seq` refused: nothing ran, the client sends it over the socket.
  static void refuse(shm::Slab& slab, uint32_t seq);
  // A StepVec's request: the share re-encoded from what was checked, and the slabs of the envs it
  // names, when every one has a live slab here of the owner of the slab it was posted in, that
  // slab among them; nullopt otherwise (refused).
  struct VecRun {
    std::string body;
    std::vector<Served*> members;
  };
  std::optional<VecRun> vec_run(std::string_view body, const Served& posted_in);
  void sleeping(bool on);
  void release(Served& s);

  std::vector<Served> live_;
  std::unordered_map<std::string, Served> granted_;  // mapped, waiting for the make's outcome
  std::unordered_map<std::string, SlabReply> spilled_;
  transport::SpinPolicy spin_policy_;
  bool spin_hint_ = true;  // the last request's worker_spin: its client's next request follows soon
};

}  // namespace gymfarm::worker
