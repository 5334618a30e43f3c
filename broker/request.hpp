#pragma once
// A client request on its way through a worker, and the kinds it comes in: each kind carries what
// its answer needs to find its way back (a step_batch slot, a vector env's rows).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "broker/clock.hpp"
#include "protocol/frames.hpp"

namespace gymfarm::broker {

struct Request {
  // A request on its own (step, reset, close, ...): answered to the client by its request id.
  struct Plain {};
  // make; `shared`: any client may use the instance; `slab`: the client asked for a slab (a local
  // client's `shm`), granted in start_make and handed over with the reply.
  struct Make {
    bool shared = false;
    bool slab = false;
  };
  // One step of a step_batch, sent as a plain step; its result is slot `index` of batch `batch`.
  struct BatchPart {
    uint64_t batch = 0;
    std::size_t index = 0;
  };
  // The steps of one step_batch for this worker's instances, sent as one step_many and answered
  // part by part (--envs-per-worker).
  struct StepMany {
    struct Part {
      std::string instance;
      std::string body;
      std::size_t index = 0;  // its slot in the batch
    };
    uint64_t batch = 0;
    std::vector<Part> parts;
  };
  // One worker's share of a vector env's step: `instances` are its envs, `rows` their rows in the
  // client's vector.
  struct VecShare {
    uint64_t batch = 0;
    std::vector<std::string> instances;
    std::vector<std::size_t> rows;
  };
  using Kind = std::variant<Plain, Make, BatchPart, StepMany, VecShare>;

  std::string client;      // frontend identity of the requester
  std::string client_rid;  // the client's 8-byte request id
  std::string verb;
  std::string instance;
  std::string body;
  TimePoint received{};     // when the broker read it (request latency in `stats`); zero for its own
  std::size_t counted = 0;  // requests it counts for towards the client's in-flight limit until answered
  Kind kind;

  template <class K>
  K* as() {
    return std::get_if<K>(&kind);
  }
  template <class K>
  const K* as() const {
    return std::get_if<K>(&kind);
  }
  // Whether it is for `id`: its own instance, or one of its parts' (a step_many, a vector share).
  bool concerns(const std::string& id) const {
    if (instance == id) return true;
    if (const auto* m = as<StepMany>())
      return std::any_of(m->parts.begin(), m->parts.end(), [&](const auto& p) { return p.instance == id; });
    if (const auto* v = as<VecShare>())
      return std::find(v->instances.begin(), v->instances.end(), id) != v->instances.end();
    return false;
  }
};

// How long a request with this verb may run on its worker: a make gets --make-timeout, every other
// verb --step-timeout. One rule for the dispatcher's deadlines and the loop's checks.
inline Duration verb_timeout(std::string_view verb, Duration step_timeout, Duration make_timeout) {
  return verb == protocol::verb::kMake ? make_timeout : step_timeout;
}

}  // namespace gymfarm::broker
