#include "client/client.hpp"

#include <sys/socket.h>
#include <unistd.h>
#include <zmq.hpp>

#include <poll.h>

#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "client/slabs.hpp"
#include "protocol/codec.hpp"
#include "protocol/frames.hpp"
#include "shm/slab.hpp"
#include "transport/frames.hpp"
#include "transport/stream.hpp"

namespace gymfarm::client {

using protocol::Error;
using protocol::ErrorCode;
using transport::view;

struct Client::Impl {
  explicit Impl(ClientOptions o)
      : opt(std::move(o)),
        own(opt.context ? nullptr : std::make_unique<zmq::context_t>(1)),
        sock(opt.context ? *opt.context : *own, zmq::socket_type::dealer),
        slabs(opt.slabs ? opt.slabs : make_slab_registry()) {}
  ClientOptions opt;
  std::unique_ptr<zmq::context_t> own;
  zmq::socket_t sock;
  uint64_t next_rid = 1;
  std::string endpoint;
  std::unique_ptr<transport::StreamConn> local;  // set once the client moved to the local socket
  bool inproc = false;
  transport::SpinPolicy spin_policy;  // for the inproc reply wait

  std::shared_ptr<SlabRegistry> slabs;  // the instances' slabs (docs/protocol.md "Shared memory")

  // Every use of the socket (or the local link) and of next_rid holds io_mu: the client's own
  // calls and the lease thread's pings.
  std::mutex io_mu;
  std::atomic<std::chrono::steady_clock::rep> last_sent{0};  // steady_clock ticks of the last request
  std::chrono::milliseconds lease{0};
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stop = false;                 // under stop_mu
  std::atomic<bool> closing{false};  // a ping under way gives up at once
  std::thread renewer;

  [[noreturn]] void raise(ErrorCode code, std::string message) {
    throw ClientError(Error{code, std::move(message), Value(protocol::Map{})});
  }

  // Sends frames and waits for the reply with the same rid; returns [rid, status, body...].
  transport::Frames round_trip(const std::vector<std::string_view>& frames, uint64_t rid) {
    return round_trip(frames, rid, opt.timeout);
  }

  transport::Frames round_trip(const std::vector<std::string_view>& frames, uint64_t rid,
                               std::chrono::milliseconds timeout, bool abortable = false) {
    last_sent.store(std::chrono::steady_clock::now().time_since_epoch().count());
    if (local) return local_round_trip(frames, rid);
    if (!transport::send(sock, frames, true)) raise(ErrorCode::Internal, "cannot send to " + endpoint);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    transport::Frames in;
    if (inproc && opt.spin.count() > 0 && spin_policy.should_spin()) {  // no I/O thread to starve: poll first
      const auto until = std::chrono::steady_clock::now() + opt.spin;
      while (std::chrono::steady_clock::now() < until) {
        if (transport::recv(sock, in) && answers(in, rid)) {
          spin_policy.spun(true);
          return in;
        }
        std::this_thread::yield();
      }
      spin_policy.spun(false);
    }
    while (true) {
      if (abortable && closing.load()) raise(ErrorCode::Timeout, "the client is closing");
      auto left = left_until(deadline, timeout);
      if (abortable) left = std::min(left, std::chrono::milliseconds(50));
      zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, left);
      if (transport::recv(sock, in) && answers(in, rid)) return in;
    }
  }

  // The lease thread: a ping whenever the client sent nothing for a third of the lease, over
  // ZeroMQ only (the local socket needs none); it waits for the client's own call rather than
  // share the socket.
  void renew_loop() {
    const auto interval = std::max(std::chrono::milliseconds(1), lease / 3);
    const auto ping_timeout = std::max(std::chrono::milliseconds(1000), 2 * interval);
    std::unique_lock stop_lock(stop_mu);
    while (!stop_cv.wait_for(stop_lock, interval, [this] { return stop; })) {
      stop_lock.unlock();
      {
        std::lock_guard io(io_mu);
        const auto idle = std::chrono::steady_clock::now() -
                          std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(last_sent.load()));
        if (!local && idle >= interval && !closing.load()) {
          const uint64_t rid = next_rid++;
          const std::string rid_bytes = protocol::encode_rid(rid);
          const std::string body = protocol::encode(Value(protocol::Map{}));
          try {
            round_trip({protocol::verb::kPing, "", rid_bytes, body}, rid, ping_timeout, true);
          } catch (const ClientError&) {
            // no answer: the farm may be gone or busy; the next tick tries again
          } catch (const zmq::error_t&) {
          }
        }
      }
      stop_lock.lock();
    }
  }

  void start_renewal(const Value& hello_reply) {
    const Value* ms = hello_reply.find("lease_ms");
    if (!opt.lease || !ms || !ms->is_int() || ms->as_int() <= 0) return;
    lease = std::chrono::milliseconds(ms->as_int());
    renewer = std::thread([this] { renew_loop(); });
  }

  void stop_renewal() {
    closing.store(true);
    {
      std::lock_guard lock(stop_mu);
      stop = true;
    }
    stop_cv.notify_all();
    if (renewer.joinable()) renewer.join();
  }

  // Whether `in` is the reply to request `rid`: [rid, status, ...] (replies to requests this client
  // gave up on may still arrive).
  bool answers(const transport::Frames& in, uint64_t rid) {
    if (in.size() < 2) return false;
    auto got = protocol::decode_rid(view(in[0]));
    if (got && *got == rid) return true;
    // A late reply to a make this client gave up on: the slab descriptors it brought are closed.
    const auto [memfd, doorbell] = slab_fds(in);
    if (memfd >= 0) ::close(memfd);
    if (doorbell >= 0) ::close(doorbell);
    return false;
  }

  std::chrono::milliseconds left_until(std::chrono::steady_clock::time_point deadline) {
    return left_until(deadline, opt.timeout);
  }

  std::chrono::milliseconds left_until(std::chrono::steady_clock::time_point deadline,
                                       std::chrono::milliseconds timeout) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                            std::chrono::steady_clock::now());
    if (left.count() <= 0)
      raise(ErrorCode::Timeout,
            "no reply from the farm at " + endpoint + " within " + std::to_string(timeout.count()) + " ms");
    return left;
  }

  // The same over the local socket. A broken link (the farm stopped) fails the call; the next
  // call goes over ZeroMQ again, which reconnects by itself.
  transport::Frames local_round_trip(const std::vector<std::string_view>& frames, uint64_t rid) {
    using Read = transport::StreamConn::Read;
    if (!local->send(frames)) return lost_local();
    const auto deadline = std::chrono::steady_clock::now() + opt.timeout;
    transport::Frames in;
    while (true) {
      const auto left = left_until(deadline);
      if (local->wants_write()) {
        if (!local->flush()) return lost_local();
        std::this_thread::sleep_for(std::chrono::microseconds(50));
        continue;
      }
      const Read r = local->wait(in, opt.spin, std::min(left, std::chrono::milliseconds(100)));
      if (r == Read::Closed || r == Read::TooLarge) return lost_local();
      if (r == Read::Message && answers(in, rid)) return in;
    }
  }

  [[noreturn]] transport::Frames lost_local() {
    local.reset();
    slabs->clear();
    raise(ErrorCode::Timeout, "the connection to the farm at " + endpoint + " was lost");
  }

  // After the hello over ZeroMQ: moves to the farm's local socket when both ends are on this host.
  void go_local(const Value& hello_reply, const std::string& hello_body) {
    const Value* path = hello_reply.find("local");
    if (!opt.local || !path || !path->is_string() || !on_this_host(endpoint)) return;
    const int fd = transport::connect_unix(path->as_string());
    if (fd < 0) return;
    if (!served_by_us(fd)) {  // the hello carries the token: never to a socket another user serves
      ::close(fd);
      return;
    }
    local = std::make_unique<transport::StreamConn>(fd, 0);
    local->accept_fds(opt.shm);  // a make's reply brings its slab's descriptors
    const uint64_t rid = next_rid++;
    const std::string rid_bytes = protocol::encode_rid(rid);
    try {
      auto in = local_round_trip({protocol::verb::kHello, "", rid_bytes, hello_body}, rid);
      Value again;
      std::string err;
      const Value* farm = hello_reply.find("farm");
      const bool same = in.size() == 3 && view(in[1]) == protocol::kStatusOk &&
                        protocol::decode(view(in[2]), again, err) && farm && again.find("farm") &&
                        *again.find("farm") == *farm;
      if (!same) local.reset();  // not this farm's socket (another mount namespace, say): stay on ZeroMQ
    } catch (const ClientError&) {
      local.reset();
    }
  }

  // Whether the process listening on the connected unix socket `fd` runs as our effective uid
  // (SO_PEERCRED: the listener's credentials, fixed when it called listen). Root's is refused too.
  static bool served_by_us(int fd) {
    ucred cred{};
    socklen_t len = sizeof cred;
    return ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && len == sizeof cred && cred.uid == ::geteuid();
  }

  // While a slab's reply is slept on over the local socket: the farm closed it (nothing else
  // comes on it meanwhile).
  void watch_local() {
    if (!local) return;
    pollfd p{local->fd(), POLLIN, 0};
    transport::Frames stray;
    if (::poll(&p, 1, 0) > 0 && local->next(stray) == transport::StreamConn::Read::Closed) lost_local();
  }

  // A make's reply that brought a slab: [rid, ok, body, "slab"] with the descriptors over the local
  // socket, or [rid, ok, body, "slab", memfd, doorbell] inproc (the numbers of descriptors the
  // broker duplicated for this process). The descriptors, or -1 each; a reply without them: -1.
  std::pair<int, int> slab_fds(const transport::Frames& in) {
    if (in.size() < 4 || view(in[3]) != protocol::verb::kSlab) return {-1, -1};
    if (local && in.size() == 4) {
      const int memfd = local->take_fd();
      return {memfd, local->take_fd()};
    }
    if (inproc && in.size() == 6) {
      auto number = [](std::string_view s) {
        int fd = -1;
        const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), fd);
        return ec == std::errc() && end == s.data() + s.size() && fd > STDERR_FILENO ? fd : -1;
      };
      return {number(view(in[4])), number(view(in[5]))};
    }
    return {-1, -1};
  }

  static bool on_this_host(const std::string& ep) {
    for (const char* p : {"ipc://", "tcp://127.", "tcp://localhost:", "tcp://[::1]:"}) {
      if (ep.rfind(p, 0) == 0) return true;
    }
    return false;
  }
};

namespace {
Value decode_or_throw(std::string_view bytes) {
  Value v;
  std::string err;
  if (!protocol::decode(bytes, v, err))
    throw ClientError(Error{ErrorCode::Internal, "bad reply from the farm: " + err, Value(protocol::Map{})});
  return v;
}

StepResult to_step(const Value& v) {
  StepResult s;
  if (const Value* x = v.find("obs")) s.obs = *x;
  if (const Value* x = v.find("reward"); x && x->is_number()) {
    s.reward = x->as_double();
  } else if (x && x->is_tensor() && x->as_tensor().elements() == 1) {
    s.reward = x->as_tensor().as_double(0);  // a numpy scalar reward (np.float64, np.int64, ...)
  }
  if (const Value* x = v.find("terminated"); x && x->is_bool()) s.terminated = x->as_bool();
  if (const Value* x = v.find("truncated"); x && x->is_bool()) s.truncated = x->as_bool();
  if (const Value* x = v.find("info")) s.info = *x;
  return s;
}

protocol::Space to_space(const Value* v) {
  std::string err;
  auto s = v ? protocol::Space::from_value(*v, err) : std::nullopt;
  if (!s) throw ClientError(Error{ErrorCode::Internal, "bad space from the farm: " + err, Value(protocol::Map{})});
  return *s;
}
}  // namespace

Client::Client(const std::string& endpoint, ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {
  impl_->endpoint = endpoint;
  impl_->inproc = endpoint.rfind("inproc://", 0) == 0;
  transport::configure(impl_->sock);
  const ClientOptions& o = impl_->opt;
  if (!o.curve_server_key.empty() || !o.curve_public_key.empty() || !o.curve_secret_key.empty()) {
    if (o.curve_server_key.size() != 40 || o.curve_public_key.size() != 40 || o.curve_secret_key.size() != 40) {
      throw std::invalid_argument("CURVE needs curve_server_key, curve_public_key and curve_secret_key, z85 each");
    }
    impl_->sock.set(zmq::sockopt::curve_serverkey, o.curve_server_key);
    impl_->sock.set(zmq::sockopt::curve_publickey, o.curve_public_key);
    impl_->sock.set(zmq::sockopt::curve_secretkey, o.curve_secret_key);
  }
  impl_->sock.connect(endpoint);
  Value hello(protocol::Map{});
  hello.set("version", protocol::kProtocolVersion);
  hello.set("client", impl_->opt.name);
  if (!impl_->opt.token.empty()) hello.set("token", impl_->opt.token);
  if (impl_->opt.lease) hello.set("lease", true);
  if (impl_->opt.keep_instances) hello.set("keep_instances", true);
  hello_ = call(protocol::verb::kHello, {}, hello);
  impl_->go_local(hello_, protocol::encode(hello));
  impl_->start_renewal(hello_);
}

bool Client::is_local() const {
  std::lock_guard io(impl_->io_mu);
  return impl_->local != nullptr;
}

std::chrono::milliseconds Client::lease() const { return impl_->lease; }

Client::~Client() {
  if (impl_) impl_->stop_renewal();
}

Value Client::call(std::string_view verb, std::string_view instance, const Value& body) {
  if ((verb == protocol::verb::kStep || verb == protocol::verb::kReset) && !instance.empty()) {
    if (auto slab_call = SlabCall::post(impl_->slabs, std::string(instance), verb, protocol::encode(body))) {
      return finish(*slab_call);
    }
  }
  if (verb == protocol::verb::kMake && impl_->opt.shm && (impl_->local || impl_->inproc)) return make_with_slab(body);
  const std::string payload = protocol::encode(body);
  std::unique_lock io(impl_->io_mu);
  const uint64_t rid = impl_->next_rid++;
  const std::string rid_bytes = protocol::encode_rid(rid);
  auto in = impl_->round_trip({verb, instance, rid_bytes, payload}, rid);
  io.unlock();
  if (verb == protocol::verb::kClose) impl_->slabs->erase(std::string(instance));
  if (in.size() != 3) impl_->raise(ErrorCode::Internal, "bad reply from the farm: wrong frame count");
  Value v = decode_or_throw(view(in[2]));
  if (view(in[1]) != protocol::kStatusOk) throw ClientError(Error::from_value(v));
  return v;
}

Value Client::make_with_slab(const Value& body) {
  Value asked = body;
  if (asked.is_map()) asked.set("shm", true);
  const std::string payload = protocol::encode(asked);
  std::unique_lock io(impl_->io_mu);
  const uint64_t rid = impl_->next_rid++;
  const std::string rid_bytes = protocol::encode_rid(rid);
  auto in = impl_->round_trip({protocol::verb::kMake, "", rid_bytes, payload}, rid);
  const auto fds = impl_->slab_fds(in);
  int memfd = fds.first, doorbell = fds.second;
  io.unlock();
  auto close_fds = [&] {
    if (memfd >= 0) ::close(memfd);
    if (doorbell >= 0) ::close(doorbell);
    memfd = doorbell = -1;
  };
  if (in.size() < 3) {
    close_fds();
    impl_->raise(ErrorCode::Internal, "bad reply from the farm: wrong frame count");
  }
  Value v;
  try {
    v = decode_or_throw(view(in[2]));
  } catch (...) {
    close_fds();
    throw;
  }
  if (view(in[1]) != protocol::kStatusOk) {
    close_fds();
    throw ClientError(Error::from_value(v));
  }
  const Value* id = v.find("instance_id");
  if (memfd >= 0 && doorbell >= 0 && id && id->is_string()) {
    auto entry = std::make_shared<SlabEntry>();
    std::string err;
    if (entry->slab.map(memfd, err)) {
      entry->doorbell = std::exchange(doorbell, -1);
      impl_->slabs->add(id->as_string(), std::move(entry));
    }
  }
  close_fds();
  return v;
}

EnvHandle Client::make(const std::string& env_id, const Value& kwargs) {
  Value body(protocol::Map{});
  body.set("env_id", env_id);
  body.set("kwargs", kwargs);
  Value v = call(protocol::verb::kMake, {}, body);
  EnvHandle h;
  h.instance_id = v.find("instance_id")->as_string();
  h.env_id = env_id;
  h.observation_space = to_space(v.find("observation_space"));
  h.action_space = to_space(v.find("action_space"));
  if (const Value* x = v.find("render_mode")) h.render_mode = *x;
  if (const Value* x = v.find("metadata")) h.metadata = *x;
  if (const Value* x = v.find("spec")) h.spec = *x;
  return h;
}

Value Client::finish(SlabCall& slab_call) {
  std::unique_lock io(impl_->io_mu, std::defer_lock);
  if (impl_->local) io.lock();  // its socket is watched while the slab is waited on
  impl_->last_sent.store(std::chrono::steady_clock::now().time_since_epoch().count());
  const auto start = std::chrono::steady_clock::now();
  if (!slab_call.done() && slab_call.recent() < impl_->opt.spin) slab_call.spin(impl_->opt.spin);
  const bool answered = slab_call.sleep(start + impl_->opt.timeout, impl_->endpoint, [this] { impl_->watch_local(); });
  if (answered) {
    if (auto v = slab_call.result()) return std::move(*v);
  }
  if (io.owns_lock()) io.unlock();
  if (answered)
    return call(protocol::verb::kSpilled, slab_call.instance());  // too large for the slab: the worker kept it
  // the instance is gone unanswered: its tombstone answers over the socket
  Value body;
  std::string err;
  if (!protocol::decode(slab_call.body(), body, err)) body = Value(protocol::Map{});
  return call(slab_call.verb(), slab_call.instance(), body);
}

bool Client::has_slab(const std::string& instance) const { return impl_->slabs->find(instance) != nullptr; }

std::pair<Value, Value> Client::reset(const std::string& instance, std::optional<int64_t> seed, const Value& options) {
  Value body(protocol::Map{});
  if (seed) body.set("seed", *seed);
  if (!options.is_nil()) body.set("options", options);
  Value v = call(protocol::verb::kReset, instance, body);
  return {*v.find("obs"), *v.find("info")};
}

StepResult Client::step(const std::string& instance, const Value& action) {
  Value body(protocol::Map{});
  body.set("action", action);
  return to_step(call(protocol::verb::kStep, instance, body));
}

std::vector<BatchItem> Client::step_batch(const std::vector<std::pair<std::string, Value>>& actions) {
  std::unique_lock io(impl_->io_mu);
  const uint64_t rid = impl_->next_rid++;
  const std::string rid_bytes = protocol::encode_rid(rid);
  std::vector<std::string> bodies;
  bodies.reserve(actions.size());
  for (const auto& [inst, action] : actions) {
    Value body(protocol::Map{});
    body.set("action", action);
    bodies.push_back(protocol::encode(body));
  }
  std::vector<std::string_view> frames{protocol::verb::kStepBatch, "", rid_bytes};
  for (std::size_t i = 0; i < actions.size(); ++i) {
    frames.push_back(actions[i].first);
    frames.push_back(bodies[i]);
  }
  auto in = impl_->round_trip(frames, rid);
  io.unlock();
  if (view(in[1]) != protocol::kStatusOk) throw ClientError(Error::from_value(decode_or_throw(view(in[2]))));
  if (in.size() != 2 + 2 * actions.size()) impl_->raise(ErrorCode::Internal, "bad batch reply: wrong frame count");
  std::vector<BatchItem> out(actions.size());
  for (std::size_t i = 0; i < actions.size(); ++i) {
    Value v = decode_or_throw(view(in[3 + 2 * i]));
    if (view(in[2 + 2 * i]) == protocol::kStatusOk) out[i].result = to_step(v);
    else out[i].error = Error::from_value(v);
  }
  return out;
}

void Client::close(const std::string& instance) { call(protocol::verb::kClose, instance); }

Value Client::sample(const std::string& instance, std::string_view space) {
  Value body(protocol::Map{});
  body.set("space", std::string(space));
  return *call(protocol::verb::kSample, instance, body).find("value");
}

Value Client::render(const std::string& instance) { return *call(protocol::verb::kRender, instance).find("frame"); }
Value Client::stats() { return call(protocol::verb::kStats); }
Value Client::list() { return *call(protocol::verb::kList).find("instances"); }

std::vector<std::string> Client::envs() {
  std::vector<std::string> out;
  const Value reply = call(protocol::verb::kEnvs);
  for (const auto& id : reply.find("env_ids")->as_array()) out.push_back(id.as_string());
  return out;
}

}  // namespace gymfarm::client
