// The live-broker fuzz target (fuzz/broker_target.hpp): a real Broker in this process, its real
// loop on its own thread, real gymfarm-worker processes, and arbitrary native messages sent to it
// over both client paths (ZeroMQ over TCP, and the local unix socket).
#include "fuzz/broker_target.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "broker/broker.hpp"
#include "protocol/codec.hpp"
#include "protocol/frames.hpp"
#include "transport/frames.hpp"
#include "transport/stream.hpp"

namespace gymfarm::fuzz {
namespace {

using protocol::Value;
using transport::Frames;
using Clock = std::chrono::steady_clock;

constexpr const char* kToken = "5eed5eed5eed5eed5eed5eed5eed5eed";
constexpr auto kAnswerWithin = std::chrono::seconds(20);  // longer than any deadline the farm keeps here
constexpr std::size_t kMaxMessages = 32;
constexpr std::size_t kCheckEvery = 16;

[[noreturn]] void fail(const std::string& why) {
  std::fprintf(stderr, "[fuzz_broker] %s\n", why.c_str());
  __builtin_trap();
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// A blocking client of the local socket, framed as transport/stream.hpp frames messages.
class LocalPeer {
 public:
  bool connect(const std::string& path) {
    close();
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS && errno != EAGAIN) {
      close();
      return false;
    }
    conn_ = std::make_unique<transport::StreamConn>(fd_, 256LL << 20);
    return true;
  }
  bool open() const { return fd_ >= 0; }
  bool send(const std::vector<std::string>& frames) {
    std::vector<std::string_view> v(frames.begin(), frames.end());
    if (!conn_ || !conn_->send(v)) return false;
    const auto until = Clock::now() + kAnswerWithin;
    while (conn_->wants_write()) {  // the farm reads slowly: wait until it took the whole message
      if (Clock::now() > until) fail("the farm took no bytes from the local socket for 20 s");
      pollfd p{fd_, POLLOUT, 0};
      ::poll(&p, 1, 100);
      if (!conn_->flush()) return false;
    }
    return true;
  }
  // The next message within `until`; false when none came or the farm closed the socket.
  bool recv(Frames& out, Clock::time_point until) {
    while (conn_) {
      const auto r = conn_->next(out);
      if (r == transport::StreamConn::Read::Message) return true;
      if (r != transport::StreamConn::Read::Nothing) {
        close();
        return false;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
      if (left <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 100)));
    }
    return false;
  }
  void close() {
    conn_.reset();  // closes fd_
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::unique_ptr<transport::StreamConn> conn_;
};

struct Live {
  std::string dir;
  std::unique_ptr<broker::Broker> broker;
  std::thread loop;
  std::atomic<bool> ready{false}, exited{false};
  std::string endpoint, local_path, instance;
  zmq::context_t ctx{1};
  zmq::socket_t dealer{ctx, zmq::socket_type::dealer};
  LocalPeer local;
  uint64_t next_rid = 1ull << 40;  // the harness's own request ids; inputs choose theirs
  std::size_t inputs = 0;
  bool replaying = std::getenv("GYMFARM_FUZZ_REPLAY") != nullptr;  // check after every input

  std::string rid() { return protocol::encode_rid(next_rid++); }

  // Sends one request and waits for its answer on that path, skipping others' replies.
  bool ask(bool on_local, const std::string& verb, const std::string& inst, const Value& body, Value* out) {
    const std::string r = rid();
    const std::vector<std::string> frames{verb, inst, r, protocol::encode(body)};
    if (on_local) {
      if (!local.send(frames)) return false;
    } else {
      std::vector<std::string_view> v(frames.begin(), frames.end());
      if (!transport::send(dealer, v)) return false;
    }
    const auto until = Clock::now() + kAnswerWithin;
    Frames m;
    while (Clock::now() < until) {
      if (exited) fail("the broker loop exited");
      bool got = false;
      if (on_local) {
        got = local.recv(m, until);
        if (!got && !local.open()) return false;
      } else {
        zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
        try {
          if (zmq::poll(&item, 1, std::chrono::milliseconds(100)) > 0) got = transport::recv(dealer, m);
        } catch (const zmq::error_t&) {  // EINTR: a signal reached this thread; wait again
        }
      }
      if (!got || m.size() < 3 || transport::view(m[0]) != r) continue;
      if (out) {
        std::string err;
        if (!protocol::decode(transport::view(m[2]), *out, err)) *out = Value();
        if (transport::view(m[1]) != protocol::kStatusOk) *out = Value();
      }
      return true;
    }
    fail(std::string("no answer within 20 s on the ") + (on_local ? "local socket" : "ZeroMQ path") + " to " + verb);
  }

  Value hello() const { return Value(protocol::Map{{"version", protocol::kProtocolVersion}, {"token", kToken}}); }

  void reconnect_local() {
    if (!local.connect(local_path)) fail("cannot reconnect to the local socket");
    Value v;
    if (!ask(true, "hello", "", hello(), &v) || !v.is_map()) fail("the local hello failed");
  }

  void start() {
    char tmpl[] = "/tmp/gf-fuzz-XXXXXX";
    if (!::mkdtemp(tmpl)) fail("mkdtemp failed");
    dir = tmpl;
    broker::BrokerOptions o;
    o.workers = 2;
    o.frontend = "tcp://127.0.0.1:0";
    o.runtime_dir = dir;
    o.worker_exe = env_or("GYMFARM_WORKER", "build/bin/gymfarm-worker");
    o.python = env_or("GYMFARM_PYTHON", "");
    o.token = kToken;
    o.step_timeout = std::chrono::seconds(3);
    o.make_timeout = std::chrono::seconds(10);
    o.max_message_bytes = 16 << 20;
    broker::Broker::block_signals();
    broker = std::make_unique<broker::Broker>(o);
    endpoint = broker->bind();
    loop = std::thread([this] {
      broker->run([this] { ready = true; });
      exited = true;
    });
    for (int i = 0; i < 1200 && !ready; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!ready) fail("the farm did not become ready (set GYMFARM_WORKER and GYMFARM_PYTHON)");
    dealer.set(zmq::sockopt::linger, 0);
    dealer.connect(endpoint);
    Value v;
    if (!ask(false, "hello", "", hello(), &v) || !v.find("local")) fail("the hello failed");
    local_path = v.find("local")->as_string();
    reconnect_local();
    remake();
  }

  // Keeps one live instance for inputs to name ("@I"), and closes what inputs made.
  void remake() {
    Value listed;
    ask(false, "list", "", Value(protocol::Map{}), &listed);
    bool have = false;
    if (const Value* m = listed.find("instances"); m && m->is_map()) {
      for (const auto& [id, env] : m->as_map()) {
        if (id == instance) {
          have = true;
          continue;
        }
        ask(false, "close", id, Value(protocol::Map{}), nullptr);
      }
    }
    if (have) return;
    Value made;
    ask(false, "make", "", Value(protocol::Map{{"env_id", "CartPole-v1"}}), &made);
    const Value* id = made.find("instance_id");
    instance = id && id->is_string() ? id->as_string() : std::string();
    if (!instance.empty()) ask(false, "reset", instance, Value(protocol::Map{{"seed", 0}}), nullptr);
  }

  std::string substitute(std::string frame) {
    if (frame == "@I") return instance;
    if (frame == "@T") return kToken;
    if (frame == "@R") return rid();
    return frame;
  }
};

Live& live() {
  static Live* l = [] {
    auto* p = new Live();  // never destroyed: the fuzzer exits with the process
    p->start();
    return p;
  }();
  return *l;
}

}  // namespace

void broker(const uint8_t* data, std::size_t size) {
  Live& l = live();
  // [path byte (even: ZeroMQ, odd: local socket), frame count byte, (length byte, bytes)*]*; a
  // length of 255 is followed by two more length bytes (little-endian).
  std::size_t at = 0, sent = 0;
  bool used_local = false;
  while (at + 2 <= size && sent < kMaxMessages) {
    const bool on_local = data[at] & 1;
    const std::size_t frames = data[at + 1] % 9;
    at += 2;
    std::vector<std::string> message;
    for (std::size_t i = 0; i < frames && at < size; ++i) {
      std::size_t len = data[at++];
      if (len == 255 && at + 2 <= size) {
        len = data[at] | (static_cast<std::size_t>(data[at + 1]) << 8);
        at += 2;
      }
      len = std::min(len, size - at);
      message.push_back(l.substitute(std::string(reinterpret_cast<const char*>(data + at), len)));
      at += len;
    }
    if (on_local) {
      if (!l.local.open()) l.reconnect_local();
      used_local = true;
      l.local.send(message);
    } else {
      std::vector<std::string_view> v(message.begin(), message.end());
      // an empty message cannot be sent on a DEALER: skip it
      if (!v.empty()) transport::send(l.dealer, v);
    }
    ++sent;
  }
  // The farm must still answer on both paths: a ping on each, behind what the inputs sent, every
  // kCheckEvery inputs (a round trip per input would bound the rate at the round trip; a broker that
  // dies takes this process with it at once anyway, since it runs in it).
  ++l.inputs;
  if (l.inputs % kCheckEvery == 0 || l.replaying) {
    l.ask(false, "ping", "", Value(protocol::Map{}), nullptr);
    if (!l.local.open()) l.reconnect_local();
    if (!l.ask(true, "ping", "", Value(protocol::Map{}), nullptr)) l.reconnect_local();
  } else if (used_local && !l.local.open()) {
    l.reconnect_local();
  }
  if (l.inputs % 512 == 0) l.remake();
}

}  // namespace gymfarm::fuzz
