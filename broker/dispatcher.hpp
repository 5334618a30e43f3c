#pragma once
// Requests on their way to workers and replies on their way back: routing a request to the worker
// that holds its instance (ownership and the per-client in-flight limit first), a bounded queue per
// worker with one request in flight, step_batch fanned out (parts for one worker travel as one
// step_many) and reassembled in order, step_vec split by worker and its shares stacked back, and a
// worker's reply matched to its request. The sockets are the loop's (DispatchLinks), so the whole
// path runs in unit tests with fake links (tests/unit/broker/test_dispatcher.cpp).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "broker/admission.hpp"
#include "broker/clock.hpp"
#include "broker/request.hpp"
#include "broker/routing_table.hpp"
#include "broker/stats.hpp"
#include "broker/worker_registry.hpp"
#include "protocol/error.hpp"
#include "transport/frames.hpp"

namespace gymfarm::broker {

struct DispatchOptions {
  std::size_t max_queue_per_instance = 1024;
  std::size_t max_inflight_per_client = 0;  // only named in the overload error (Admission enforces it)
  Duration step_timeout = std::chrono::seconds(10);
  Duration make_timeout = std::chrono::seconds(60);
  bool verbose = false;
};

// What the dispatcher needs of the loop.
class DispatchLinks {
 public:
  virtual ~DispatchLinks() = default;
  // Sends frames on a worker's link; false when its pipe takes nothing now.
  virtual bool to_worker(const std::string& identity, const std::vector<std::string_view>& frames) = 0;
  // Sends [client key, rid, status, body...] to a client; false when it is gone.
  virtual bool to_client(transport::Frames& frames) = 0;
  // The reply to a make that was granted a slab: to_client with the slab's descriptors.
  virtual bool to_client_with_slab(transport::Frames& frames, const std::string& instance) {
    (void)instance;
    return to_client(frames);
  }
  virtual void kill_worker(std::size_t w, std::string why) = 0;
  // Why the broker killed this pid, while its exit is not reaped yet (nullptr: it did not).
  virtual const std::string* kill_reason(int pid) const = 0;
};

class Dispatcher {
 public:
  using Log = std::function<void(const std::string&)>;
  Dispatcher(WorkerRegistry& registry, RoutingTable& routes, Admission& admission, const Clock& clock,
             DispatchLinks& links, DispatchOptions options, Log log = {});

  // Answers r (a batch part joins its batch; a request no longer counts as in flight).
  void respond(const Request& r, std::string_view status, zmq::message_t body);
  void fail(const Request& r, const protocol::Error& e);
  // Counts r in flight for its client, or answers it `overloaded` and returns false.
  bool admit(Request& r);
  // Its tombstone, or unknown_instance.
  protocol::Error missing_instance(const std::string& instance) const;

  // A request for an instance: to the worker holding it, if r's client may use it.
  void route(Request r);
  // Queues r on worker w (bounded) and sends what it can.
  void enqueue(std::size_t w, Request r);
  // Sends the next queued request of worker w, if it is free.
  void pump(std::size_t w);
  // Sends again what a worker's pipe refused (every turn).
  void retry_refused();
  // [step_batch, "", rid, "", (instance, body)*] and [step_vec, "", rid, body, instance*] (head: the
  // request without its parts).
  void on_batch(Request& head, transport::Frames& f);
  void on_step_vec(Request& head, transport::Frames& f);
  // A worker's reply [identity, reply, rid, status, body...]: true when it closed an instance (room
  // for a waiting make).
  bool on_reply(std::size_t w, transport::Frames& f);

  // Every answer to a client (and every env step) is counted here from now on.
  void count_into(RequestCounters& counters) { counters_ = &counters; }

  // step_batch and step_vec are refused from now on (`shutting_down`).
  void shutting_down() { shutting_down_ = true; }
  std::size_t open_batches() const { return batches_.size() + vec_batches_.size(); }

 private:
  struct Batch {
    std::string client;
    std::string client_rid;
    std::vector<std::pair<std::string, zmq::message_t>> results;  // (status, body)
    std::size_t remaining = 0;
    TimePoint received{};
  };
  // A vector env's step: one part per worker, each answered as (rows, status, body).
  struct VecBatch {
    std::string client;
    std::string client_rid;
    std::vector<zmq::message_t> parts;  // rows, status, body per worker
    std::size_t remaining = 0;
    TimePoint received{};
  };

  bool dispatch(std::size_t w, Request& r);
  void settle(const Request& r);
  void send_client(const std::string& client, const std::string& rid, std::string_view status, zmq::message_t body,
                   const std::string* slab_instance = nullptr);
  void vec_result(uint64_t id, const std::vector<std::size_t>& rows, std::string_view status, zmq::message_t body);
  void batch_result(uint64_t batch_id, std::size_t index, std::string_view status, zmq::message_t body);
  Duration timeout_for(std::string_view v) const;
  // Counts an answer to a client: its verb, "ok" or the error body's code, and its latency.
  void count(std::string_view verb, std::string_view status, const zmq::message_t* body, TimePoint received);
  void count_steps(std::size_t n) {
    if (counters_) counters_->env_steps += n;
  }
  void log(const std::string& m) const {
    if (log_fn_) log_fn_(m);
  }

  WorkerRegistry& registry_;
  RoutingTable& routes_;
  Admission& admission_;
  const Clock& clock_;
  DispatchLinks& links_;
  DispatchOptions opt_;
  Log log_fn_;
  uint64_t next_rid_ = 1;
  uint64_t next_batch_ = 1;
  std::unordered_map<uint64_t, Batch> batches_;
  std::unordered_map<uint64_t, VecBatch> vec_batches_;
  RequestCounters* counters_ = nullptr;
  bool refused_sends_ = false;  // some worker's pipe refused its queued request: retry_refused() sends again
  bool shutting_down_ = false;
};

}  // namespace gymfarm::broker
