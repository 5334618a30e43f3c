// SlabServer with real slabs: the worker's side maps what the broker granted, a "client" mapping of
// the same memfd posts requests by hand, and Host answers them as the socket path would.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <span>
#include <string>

#include <pybind11/embed.h>

#include "shm/slab.hpp"
#include "tests/unit/worker/support.hpp"
#include "transport/stream.hpp"
#include "worker/host.hpp"
#include "worker/slab_server.hpp"

namespace py = pybind11;
namespace protocol = gymfarm::protocol;
namespace shm = gymfarm::shm;
namespace off = gymfarm::shm::off;
namespace verb = gymfarm::protocol::verb;
using gymfarm::worker::Args;
using gymfarm::worker::Host;
using gymfarm::worker::Reply;
using gymfarm::worker::SlabReply;
using gymfarm::worker::SlabServer;
using namespace gymfarm::worker::test;

namespace {

constexpr std::size_t kSlabBytes = std::size_t{256} * 1024;

// A slab as the broker creates it, and the client's mapping of it.
struct ClientSlab {
  int memfd = -1, doorbell = -1;
  shm::Slab slab;
  explicit ClientSlab(std::size_t bytes) {
    std::string err;
    REQUIRE(shm::Slab::create(bytes, memfd, doorbell, err));
    REQUIRE(slab.map(memfd, err));
  }
  ~ClientSlab() {
    if (memfd >= 0) ::close(memfd);
    if (doorbell >= 0) ::close(doorbell);
  }
  ClientSlab(const ClientSlab&) = delete;
  ClientSlab& operator=(const ClientSlab&) = delete;

  // The server's own descriptors (it closes the memfd once mapped and keeps the doorbell).
  void grant(SlabServer& server, const std::string& instance, const std::string& owner = "s1") const {
    server.on_grant(instance, owner, ::dup(memfd), ::dup(doorbell));
  }

  // What a client does: write the request, then bump req_seq.
  uint32_t post(shm::Verb v, std::string_view body) {
    std::memcpy(slab.word(slab.u32(off::kReqOff).load()), body.data(), body.size());
    slab.u32(off::kReqLen).store(static_cast<uint32_t>(body.size()));
    slab.u32(off::kReqVerb).store(static_cast<uint32_t>(v));
    const uint32_t seq = slab.u32(off::kReqSeq).load() + 1;
    slab.u32(off::kReqSeq).store(seq);
    return seq;
  }
  uint32_t done() const { return slab.u32(off::kDoneSeq).load(); }
  shm::Status status() const { return static_cast<shm::Status>(slab.u32(off::kRepStatus).load()); }
  shm::State state() const { return static_cast<shm::State>(slab.u32(off::kState).load()); }
  std::string reply() const {
    return {reinterpret_cast<const char*>(slab.word(slab.u32(off::kRepOff).load())), slab.u32(off::kRepLen).load()};
  }
};

// What the worker's serve loop hands SlabServer::serve: Host::handle.
SlabServer::Handler through(Host& host) {
  return [&host](std::string_view v, std::string_view instance, std::string_view body, std::span<char> raw) {
    Reply r = host.handle(v, instance, body, raw);
    return SlabReply{r.status == protocol::kStatusOk, std::move(r.body), r.raw};
  };
}

// A link to nowhere in particular: SlabServer::wait watches it along with the slabs.
struct Link {
  int other = -1;
  std::unique_ptr<gymfarm::transport::StreamConn> conn;
  Link() {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    other = sv[1];
    conn = std::make_unique<gymfarm::transport::StreamConn>(sv[0], 0);
  }
  ~Link() {
    conn.reset();
    ::close(other);
  }
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;
};

}  // namespace

TEST_CASE("SlabServer: a reset and a step posted in a slab are answered by Host through it") {
  Host host{Args{}};
  ClientSlab c(kSlabBytes);
  SlabServer server;
  c.grant(server, "cp-slab");
  CHECK(server.empty());  // granted, not served before the make succeeds
  CHECK(c.state() == shm::State::Granted);
  const Reply made = host.handle(verb::kMake, "cp-slab", make_body("CartPole-v1"));
  REQUIRE(made.status == protocol::kStatusOk);
  server.made("cp-slab", true);
  CHECK(!server.empty());
  CHECK(c.state() == shm::State::Attached);

  Link link;
  gymfarm::transport::Frames in;
  // Nothing posted: nothing to serve, and the wait times out.
  CHECK(server.serve(through(host)) == 0);
  CHECK(server.wait(*link.conn, in, std::chrono::microseconds(0), std::chrono::milliseconds(20)) ==
        SlabServer::Event::Nothing);

  const uint32_t s1 = c.post(shm::Verb::Reset, body({{"seed", protocol::Value(7)}}));
  CHECK(c.done() != s1);
  CHECK(server.wait(*link.conn, in, std::chrono::microseconds(0), std::chrono::milliseconds(500)) ==
        SlabServer::Event::Slab);
  REQUIRE(server.serve(through(host)) == 1);
  REQUIRE(c.done() == s1);
  REQUIRE(c.status() == shm::Status::Ok);
  const protocol::Value r = decoded(c.reply());
  // The same reply the socket path gives for the same reset.
  const Reply socket_reset = host.handle(verb::kReset, "cp-slab", body({{"seed", protocol::Value(7)}}));
  CHECK(c.reply() == socket_reset.body);
  CHECK(field(r, "obs").as_tensor().shape == std::vector<uint64_t>{4});

  const uint32_t s2 = c.post(shm::Verb::Step, body({{"action", protocol::Value(1)}}));
  REQUIRE(server.serve(through(host)) == 1);
  REQUIRE(c.done() == s2);
  REQUIRE(c.status() == shm::Status::Ok);
  const protocol::Value st = decoded(c.reply());
  CHECK(field(st, "reward").as_double() == 1.0);
  CHECK(field(st, "terminated").as_bool() == false);
  CHECK(c.slab.u64(off::kSteps).load() == 1);  // steps answered ok through the slab
  CHECK(c.slab.u64(off::kStepNs).load() > 0);
  CHECK(server.serve(through(host)) == 0);  // answered once

  // An error travels as the socket path's error body.
  const uint32_t s3 = c.post(shm::Verb::Step, body({{"action", protocol::Value("not an action")}}));
  REQUIRE(server.serve(through(host)) == 1);
  REQUIRE(c.done() == s3);
  CHECK(c.status() == shm::Status::Err);
  CHECK(decoded(c.reply()).find("code") != nullptr);
  host.handle(verb::kClose, "cp-slab", "");
  server.closed("cp-slab", gymfarm::worker::error_body("unknown_instance", "closed"));
  CHECK(server.empty());
}

// Decodes a value the protocol's codec reads (not necessarily a map).
protocol::Value any_decoded(std::string_view bytes) {
  protocol::Value v;
  std::string err;
  INFO("decode: " << err);
  REQUIRE(protocol::decode(bytes, v, err));
  return v;
}

TEST_CASE("SlabServer: a StepRaw is laid out raw, with the socket path's observation, reward and flags") {
  Host host{Args{}};
  ClientSlab c(kSlabBytes);
  SlabServer server;
  c.grant(server, "cp-raw");
  REQUIRE(host.handle(verb::kMake, "cp-raw", make_body("CartPole-v1")).status == protocol::kStatusOk);
  REQUIRE(host.handle(verb::kMake, "cp-sock", make_body("CartPole-v1")).status == protocol::kStatusOk);
  server.made("cp-raw", true);
  for (const char* id : {"cp-raw", "cp-sock"})
    REQUIRE(host.handle(verb::kReset, id, body({{"seed", protocol::Value(3)}})).status == protocol::kStatusOk);
  const std::string step = body({{"action", protocol::Value(1)}});
  for (int i = 0; i < 3; ++i) {
    const protocol::Value sock = decoded(host.handle(verb::kStep, "cp-sock", step).body);
    const uint32_t seq = c.post(shm::Verb::StepRaw, step);
    REQUIRE(server.serve(through(host)) == 1);
    REQUIRE(c.done() == seq);
    REQUIRE(c.status() == shm::Status::OkRaw);
    const std::string area = c.reply();
    REQUIRE(area.size() >= shm::kRawHeadBytes);
    uint32_t w[6];
    std::memcpy(w, area.data(), sizeof w);
    CHECK(w[0] == 0);  // terminated
    CHECK(w[1] == 0);  // truncated
    CHECK(w[4] % shm::kRawAlign == 0);
    REQUIRE(w[4] + w[5] == area.size());
    REQUIRE(shm::kRawHeadBytes + w[2] + w[3] <= w[4]);
    const protocol::Value desc = any_decoded(area.substr(shm::kRawHeadBytes, w[2]));
    REQUIRE(desc.is_array());
    CHECK(desc.as_array().at(0).as_string() == "<f4");
    const protocol::Tensor& obs = field(sock, "obs").as_tensor();
    CHECK(area.substr(w[4], w[5]) == obs.data);  // the env's bytes, as the socket path sends them
    const protocol::Value tail = any_decoded(area.substr(shm::kRawHeadBytes + w[2], w[3]));
    REQUIRE(tail.is_array());
    CHECK(tail.as_array().at(0).as_double() == field(sock, "reward").as_double());
    CHECK(tail.as_array().at(1).is_map());
  }
  CHECK(c.slab.u64(off::kSteps).load() == 3);

  // Too small an area: the MessagePack reply, as for a Step.
  std::string tiny(shm::kRawHeadBytes + 8, '\0');
  const Reply r = host.handle(verb::kStep, "cp-sock", step, std::span<char>(tiny.data(), tiny.size()));
  CHECK(r.raw == 0);
  CHECK(decoded(r.body).find("obs") != nullptr);
  for (const char* id : {"cp-raw", "cp-sock"}) host.handle(verb::kClose, id, "");
  server.closed("cp-raw", gymfarm::worker::error_body("unknown_instance", "closed"));
}

TEST_CASE("SlabServer: a StepRaw whose observation is not one array is answered with the MessagePack body") {
  Host host{Args{}};
  ClientSlab c(kSlabBytes);
  SlabServer server;
  c.grant(server, "bj-raw");
  REQUIRE(host.handle(verb::kMake, "bj-raw", make_body("Blackjack-v1")).status == protocol::kStatusOk);  // Tuple obs
  server.made("bj-raw", true);
  REQUIRE(host.handle(verb::kReset, "bj-raw", body({{"seed", protocol::Value(1)}})).status == protocol::kStatusOk);
  const uint32_t seq = c.post(shm::Verb::StepRaw, body({{"action", protocol::Value(0)}}));
  REQUIRE(server.serve(through(host)) == 1);
  REQUIRE(c.done() == seq);
  REQUIRE(c.status() == shm::Status::Ok);
  CHECK(field(decoded(c.reply()), "obs").is_array());
  host.handle(verb::kClose, "bj-raw", "");
  server.closed("bj-raw", gymfarm::worker::error_body("unknown_instance", "closed"));
}

TEST_CASE("SlabServer: a reply too large for its slab is kept for take_spilled") {
  Host host{Args{}};
  py::exec(R"(
import gymnasium as gym
import numpy as np

class _WorkerTestBig(gym.Env):
    observation_space = gym.spaces.Box(0.0, 1.0, (100000,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(100000, np.float32), {}

    def step(self, action):
        return np.full(100000, 0.5, np.float32), 1.0, False, False, {}

if "WorkerTest/Big-v0" not in gym.registry:
    gym.register("WorkerTest/Big-v0", entry_point=_WorkerTestBig)
)");
  ClientSlab c(shm::kMinSlabBytes);
  SlabServer server;
  c.grant(server, "big-1");
  REQUIRE(host.handle(verb::kMake, "big-1", make_body("WorkerTest/Big-v0")).status == protocol::kStatusOk);
  server.made("big-1", true);
  REQUIRE(host.handle(verb::kReset, "big-1", body({})).status == protocol::kStatusOk);

  CHECK(!server.take_spilled("big-1"));
  const uint32_t seq = c.post(shm::Verb::Step, body({{"action", protocol::Value(0)}}));
  REQUIRE(server.serve(through(host)) == 1);
  REQUIRE(c.done() == seq);  // published: the client knows to ask over its socket
  REQUIRE(c.status() == shm::Status::Spilled);
  const auto kept = server.take_spilled("big-1");
  REQUIRE(kept);
  CHECK(kept->ok);
  CHECK(c.slab.u32(off::kRepLen).load() == kept->body.size());
  CHECK(kept->body.size() > c.slab.reply_capacity());
  const protocol::Value spilled = decoded(kept->body);
  const protocol::Tensor& obs = field(spilled, "obs").as_tensor();
  CHECK(obs.shape == std::vector<uint64_t>{100000});
  CHECK(obs.valid());
  CHECK(obs.data.substr(0, 4) == std::string("\x00\x00\x00\x3f", 4));  // 0.5f: the step's, not the reset's
  CHECK(!server.take_spilled("big-1"));                                // taken once

  // A spilled reply not yet taken goes with its instance.
  c.post(shm::Verb::Step, body({{"action", protocol::Value(1)}}));
  REQUIRE(server.serve(through(host)) == 1);
  server.closed("big-1", gymfarm::worker::error_body("unknown_instance", "closed"));
  CHECK(!server.take_spilled("big-1"));
  host.handle(verb::kClose, "big-1", "");
}

TEST_CASE("SlabServer: closed() answers a request that waits in the slab, and marks it dead") {
  Host host{Args{}};
  ClientSlab c(kSlabBytes);
  SlabServer server;
  c.grant(server, "cp-closed");
  REQUIRE(host.handle(verb::kMake, "cp-closed", make_body("CartPole-v1")).status == protocol::kStatusOk);
  server.made("cp-closed", true);

  const uint32_t seq = c.post(shm::Verb::Step, body({{"action", protocol::Value(0)}}));
  REQUIRE(c.done() != seq);
  REQUIRE(host.handle(verb::kClose, "cp-closed", "").status == protocol::kStatusOk);
  server.closed("cp-closed", gymfarm::worker::error_body("unknown_instance", "instance 'cp-closed' was closed"));
  REQUIRE(c.done() == seq);
  CHECK(c.status() == shm::Status::Err);
  CHECK(c.state() == shm::State::Dead);
  const protocol::Value e = decoded(c.reply());
  CHECK(field(e, "code").as_string() == "unknown_instance");
  CHECK(field(e, "message").as_string() == "instance 'cp-closed' was closed");
  CHECK(server.empty());
  CHECK(server.serve(through(host)) == 0);
}

TEST_CASE("SlabServer: a failed make lets its slab go unserved") {
  Host host{Args{}};
  ClientSlab c(kSlabBytes);
  SlabServer server;
  c.grant(server, "nope-1");
  CHECK(host.handle(verb::kMake, "nope-1", make_body("NoSuchEnv-v0")).status == protocol::kStatusErr);
  server.made("nope-1", false);
  CHECK(server.empty());
  CHECK(c.state() == shm::State::Granted);
  const uint32_t seq = c.post(shm::Verb::Step, body({{"action", protocol::Value(0)}}));
  CHECK(server.serve(through(host)) == 0);
  CHECK(c.done() != seq);
}

namespace {

// A step_vec body: {instances, actions (int64, one per instance)}.
std::string vec_body(const std::vector<std::string>& instances, const std::vector<int64_t>& actions) {
  protocol::Array names;
  for (const auto& i : instances) names.push_back(protocol::Value(i));
  return body({{"instances", protocol::Value(std::move(names))},
               {"actions", protocol::Value(protocol::Tensor::from(protocol::DType::Int64, actions,
                                                                  {static_cast<uint64_t>(actions.size())}))}});
}

}  // namespace

TEST_CASE("SlabServer: a StepVec steps the envs of its session's slabs, as the socket path's step_vec does") {
  Host host{Args{}};
  ClientSlab a(kSlabBytes), b(kSlabBytes), other(kSlabBytes), unowned(kSlabBytes);
  SlabServer server;
  a.grant(server, "vec-a");
  b.grant(server, "vec-b");
  other.grant(server, "vec-other", "s2");  // another session's env on the same worker
  unowned.grant(server, "vec-unowned", "");
  const std::vector<std::string> mine{"vec-a", "vec-b", "vec-other", "vec-unowned"};
  for (const char* id : {"vec-a", "vec-b", "vec-other", "vec-unowned", "twin-a", "twin-b"}) {
    REQUIRE(host.handle(verb::kMake, id, make_body("CartPole-v1")).status == protocol::kStatusOk);
    REQUIRE(host.handle(verb::kReset, id, body({{"seed", protocol::Value(5)}})).status == protocol::kStatusOk);
  }
  for (const auto& id : mine) server.made(id, true);

  for (int t = 0; t < 3; ++t) {
    const uint32_t seq = a.post(shm::Verb::StepVec, vec_body({"vec-a", "vec-b"}, {1, t % 2}));
    REQUIRE(server.serve(through(host)) == 1);
    REQUIRE(a.done() == seq);
    REQUIRE(a.status() == shm::Status::Ok);
    // the same bytes the socket path's step_vec gives for the same envs and actions
    const Reply sock = host.handle(verb::kStepVec, "", vec_body({"twin-a", "twin-b"}, {1, t % 2}));
    REQUIRE(sock.status == protocol::kStatusOk);
    CHECK(a.reply() == sock.body);
    CHECK(field(decoded(a.reply()), "obs").as_tensor().shape == std::vector<uint64_t>{2, 4});
  }
  // each env named counts its steps in its own slab (the broker sees each one used)
  CHECK(a.slab.u64(off::kSteps).load() == 3);
  CHECK(b.slab.u64(off::kSteps).load() == 3);
  CHECK(b.done() == 0);  // nothing was posted in b itself

  // Refused, with nothing run: another session's env, an env with no slab here, one whose slab has no
  // owner, a posting slab with no owner, and bodies that name no instances.
  const std::vector<std::pair<ClientSlab*, std::string>> refused{
      {&a, vec_body({"vec-a", "vec-other"}, {0, 0})},
      {&a, vec_body({"vec-a", "twin-a"}, {0, 0})},
      {&a, vec_body({"vec-unowned"}, {0})},
      {&unowned, vec_body({"vec-unowned"}, {0})},
      {&a, body({{"instances", protocol::Value(protocol::Array{})}})},
      {&a, body({{"instances", protocol::Value("vec-a")}})},
      {&a, std::string("\xc1", 1)},
      {&a, vec_body({"vec-a", "vec-b"}, {0})},  // not one action row per env (the broker refuses it too)
      {&a, vec_body({"vec-b"}, {0})},           // not posted in a slab of one of its envs
      {&a, body({{"instances", protocol::Value(protocol::Array{protocol::Value("vec-a")})}})},  // no actions
  };
  for (const auto& [slab, request] : refused) {
    const uint32_t seq = slab->post(shm::Verb::StepVec, request);
    REQUIRE(server.serve(through(host)) == 1);
    REQUIRE(slab->done() == seq);
    CHECK(slab->status() == shm::Status::Refused);
    CHECK(slab->slab.u32(off::kRepLen).load() == 0);
  }
  CHECK(a.slab.u64(off::kSteps).load() == 3);

  // A map that names `instances` twice: what runs is what was checked (the first), re-encoded, so
  // the later list never reaches the env loop.
  {
    protocol::Map twice = decoded(vec_body({"vec-a"}, {0})).as_map();
    twice.emplace_back("instances", protocol::Value(protocol::Array{protocol::Value("vec-other")}));
    const uint32_t seq = a.post(shm::Verb::StepVec, protocol::encode(protocol::Value(std::move(twice))));
    REQUIRE(server.serve(through(host)) == 1);
    REQUIRE(a.done() == seq);
    REQUIRE(a.status() == shm::Status::Ok);
    CHECK(field(decoded(a.reply()), "obs").as_tensor().shape == std::vector<uint64_t>{1, 4});
    CHECK(a.slab.u64(off::kSteps).load() == 4);
  }
  CHECK(other.slab.u64(off::kSteps).load() == 0);
  // the other session's env did not move: its next step is its twin's first
  const protocol::Value moved = decoded(
      host.handle(verb::kStep, "vec-other", body({{"action", protocol::Value(0)}})).body);
  REQUIRE(host.handle(verb::kMake, "twin-c", make_body("CartPole-v1")).status == protocol::kStatusOk);
  REQUIRE(host.handle(verb::kReset, "twin-c", body({{"seed", protocol::Value(5)}})).status == protocol::kStatusOk);
  const protocol::Value first = decoded(
      host.handle(verb::kStep, "twin-c", body({{"action", protocol::Value(0)}})).body);
  CHECK(field(moved, "obs").as_tensor() == field(first, "obs").as_tensor());

  // A StepVec that waits in a slab whose env is closed is refused, not failed: its other envs
  // live on, and the socket answers each row.
  const uint32_t waiting = a.post(shm::Verb::StepVec, vec_body({"vec-a", "vec-b"}, {0, 0}));
  host.handle(verb::kClose, "vec-a", "");
  server.closed("vec-a", gymfarm::worker::error_body("unknown_instance", "closed"));
  REQUIRE(a.done() == waiting);
  CHECK(a.status() == shm::Status::Refused);
  CHECK(b.slab.u64(off::kSteps).load() == 3);  // nothing ran

  for (const auto& id : mine) {
    if (id == "vec-a") continue;
    host.handle(verb::kClose, id, "");
    server.closed(id, gymfarm::worker::error_body("unknown_instance", "closed"));
  }
  for (const char* id : {"twin-a", "twin-b", "twin-c"}) host.handle(verb::kClose, id, "");
}
