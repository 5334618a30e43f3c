#pragma once
// The C++ client of the native protocol: one DEALER socket (or the farm's local unix socket on the
// same host), synchronous calls, typed errors.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/error.hpp"
#include "protocol/space.hpp"
#include "protocol/value.hpp"

namespace zmq {
class context_t;
}

namespace gymfarm::client {

using protocol::Value;

// Every error the farm reports, with its stable code; connection problems are Timeout.
class ClientError : public std::runtime_error {
 public:
  explicit ClientError(protocol::Error e) : std::runtime_error(e.message), error_(std::move(e)) {}
  protocol::ErrorCode code() const { return error_.code; }
  const protocol::Error& error() const { return error_; }

 private:
  protocol::Error error_;
};

// The slabs of several clients in one process (the gateway's pool threads, which all serve the
// instances any of them made): what one makes, any steps through its slab, one at a time.
class SlabRegistry;
std::shared_ptr<SlabRegistry> make_slab_registry();
class SlabCall;  // client/slabs.hpp

struct ClientOptions {
  std::chrono::milliseconds timeout{60000};  // per call
  std::string name = "gymfarm-cpp";
  std::string token;  // for farms that need one
  // A ZeroMQ context to share (needed for inproc:// endpoints, e.g. the gateway inside the farm's
  // process); by default the client has its own.
  zmq::context_t* context = nullptr;
  // On this host (tcp://127.0.0.1, localhost, [::1], or ipc://), move to the farm's local unix
  // socket after the hello: the same messages with fewer wake-ups (docs/protocol.md). Only a
  // socket whose listener runs as this process's effective uid (SO_PEERCRED) is used: the hello
  // sent on it carries the token; another user's socket, root's included, leaves the client on ZeroMQ.
  bool local = true;
  // While waiting for a reply over the local socket, busy-poll this long before sleeping.
  std::chrono::microseconds spin{200};
  // Ask for a lease on the session (as the Python client does): over TCP the farm ends the session,
  // and closes its instances, once the client sends nothing for the lease (`--session-lease`,
  // given back as the hello reply's lease_ms). A background thread renews it with a ping whenever
  // the client was idle for a third of it; it stops with the client. Over the local socket the
  // farm sees the client go without one.
  bool lease = true;
  // The session's instances outlive it (the farm closes them at --idle-ttl instead, or never).
  bool keep_instances = false;
  // Over the local socket (or inproc, in the farm's own process), ask for each instance's
  // shared-memory slab: its step and reset then go to the worker without the broker
  // (docs/protocol.md "Shared memory"), with the same results.
  bool shm = true;
  // Shared with other clients of this process (make_slab_registry()); by default the client's own.
  std::shared_ptr<SlabRegistry> slabs;
  // ZeroMQ CURVE, for a farm started with --curve-secret-file: its public key and this client's
  // keypair, each z85 (40 characters). All three or none; a farm that does not list the client's
  // public key, or a wrong server key, never answers (ClientError timeout at the hello).
  std::string curve_server_key;
  std::string curve_public_key;
  std::string curve_secret_key;
};

struct EnvHandle {
  std::string instance_id;
  std::string env_id;
  protocol::Space observation_space;
  protocol::Space action_space;
  Value render_mode;
  Value metadata;
  Value spec;
};

struct StepResult {
  Value obs;
  double reward = 0.0;
  bool terminated = false;
  bool truncated = false;
  Value info;
};

// Thread-safety: one Client serves one thread's calls; its own lease renewal runs beside them
// (every use of the socket holds one lock).

// One result of a batched step: either a StepResult or the error of that env.
struct BatchItem {
  std::optional<StepResult> result;
  std::optional<protocol::Error> error;
};

// What a frontend needs of the farm: one request, its result or a ClientError. The gateway passes a
// Client; the REST fuzz target passes a scripted stand-in.
class Caller {
 public:
  virtual ~Caller() = default;
  virtual Value call(std::string_view verb, std::string_view instance = {},
                     const Value& body = Value(protocol::Map{})) = 0;
};

class Client final : public Caller {
 public:
  // Connects and exchanges hello; throws ClientError when the farm does not answer in time.
  explicit Client(const std::string& endpoint, ClientOptions options = {});
  ~Client() override;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The raw call: returns the result body or throws ClientError.
  Value call(std::string_view verb, std::string_view instance = {},
             const Value& body = Value(protocol::Map{})) override;

  EnvHandle make(const std::string& env_id, const Value& kwargs = Value(protocol::Map{}));
  std::pair<Value, Value> reset(const std::string& instance, std::optional<int64_t> seed = std::nullopt,
                                const Value& options = Value());
  StepResult step(const std::string& instance, const Value& action);
  std::vector<BatchItem> step_batch(const std::vector<std::pair<std::string, Value>>& actions);
  void close(const std::string& instance);
  Value sample(const std::string& instance, std::string_view space = "action");
  Value render(const std::string& instance);
  Value stats();
  Value list();
  std::vector<std::string> envs();
  const Value& hello() const { return hello_; }
  // True once the client moved to the farm's local unix socket (ClientOptions::local).
  bool is_local() const;
  // The lease the farm granted (the hello's lease_ms; zero: none, nothing renews it).
  std::chrono::milliseconds lease() const;
  // Whether this instance's step and reset go through its slab (ClientOptions::shm).
  bool has_slab(const std::string& instance) const;
  // Waits for a step or reset posted to a slab of this client's registry (by another thread, say:
  // SlabCall::try_post) and gives its result as call() would: the same value, the same errors.
  Value finish(SlabCall& slab_call);

 private:
  // make over the local socket or inproc: asks for the instance's slab and maps it.
  Value make_with_slab(const Value& body);

  struct Impl;
  std::unique_ptr<Impl> impl_;
  Value hello_;
};

}  // namespace gymfarm::client
