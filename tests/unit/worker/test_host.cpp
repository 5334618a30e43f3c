// Host::handle, the worker's request boundary, against host.py in the embedded interpreter: the
// replies of a CartPole episode, and errors (never exceptions) for what a request or env gets wrong.
#include <catch2/catch.hpp>

#include <string>

#include <pybind11/embed.h>

#include "tests/unit/worker/support.hpp"
#include "worker/host.hpp"

using namespace gymfarm::worker::test;

TEST_CASE("Host::handle: make, reset, step and close of CartPole-v1") {
  Host host{Args{}};
  const Reply made = host.handle(verb::kMake, "cp-1", make_body("CartPole-v1"));
  REQUIRE(made.status == protocol::kStatusOk);
  const protocol::Value m = decoded(made.body);
  CHECK(field(m, "instance_id").as_string() == "cp-1");
  CHECK(field(m, "env_id").as_string() == "CartPole-v1");
  CHECK(field(field(m, "action_space"), "type").as_string() == "Discrete");
  CHECK(field(field(m, "observation_space"), "type").as_string() == "Box");

  const Reply reset = host.handle(verb::kReset, "cp-1", body({{"seed", protocol::Value(42)}}));
  REQUIRE(reset.status == protocol::kStatusOk);
  const protocol::Value r = decoded(reset.body);
  const protocol::Tensor& obs = field(r, "obs").as_tensor();
  CHECK(obs.dtype == protocol::DType::Float32);
  CHECK(obs.shape == std::vector<uint64_t>{4});
  CHECK(obs.valid());
  CHECK(field(r, "info").is_map());

  // The same seed gives the same first observation: the reply carries the env's real state.
  const Reply again = host.handle(verb::kReset, "cp-1", body({{"seed", protocol::Value(42)}}));
  CHECK(field(decoded(again.body), "obs").as_tensor() == obs);

  int steps = 0;
  bool done = false;
  while (!done && steps < 600) {
    const Reply s = host.handle(verb::kStep, "cp-1", body({{"action", protocol::Value(steps % 2)}}));
    REQUIRE(s.status == protocol::kStatusOk);
    const protocol::Value v = decoded(s.body);
    CHECK(field(v, "reward").as_double() == 1.0);
    CHECK(field(v, "obs").as_tensor().shape == std::vector<uint64_t>{4});
    CHECK(field(v, "truncated").is_bool());
    done = field(v, "terminated").as_bool() || field(v, "truncated").as_bool();
    ++steps;
  }
  CHECK(done);  // alternating actions end CartPole's episode long before its 500-step limit
  CHECK(steps < 500);

  const Reply closed = host.handle(verb::kClose, "cp-1", "");
  REQUIRE(closed.status == protocol::kStatusOk);
  CHECK(field(decoded(closed.body), "closed").as_bool());
  // A closed instance is gone: its step is an error, not an exception.
  const Reply after = host.handle(verb::kStep, "cp-1", body({{"action", protocol::Value(0)}}));
  CHECK(after.status == protocol::kStatusErr);
}

TEST_CASE("Host::handle: an unknown verb is a bad_request") {
  Host host{Args{}};
  Reply r;
  REQUIRE_NOTHROW(r = host.handle("frobnicate", "x", body({})));
  CHECK(error_code(r) == "bad_request");
  CHECK(field(decoded(r.body), "message").as_string() == "unknown verb 'frobnicate'");
}

TEST_CASE("Host::handle: a body that is not a map, or not MessagePack, is a bad_request") {
  Host host{Args{}};
  Reply r;
  REQUIRE_NOTHROW(r = host.handle(verb::kStep, "x", protocol::encode(protocol::Value(protocol::Array{1, 2}))));
  CHECK(error_code(r) == "bad_request");
  CHECK(field(decoded(r.body), "message").as_string() == "the body must be a map");
  REQUIRE_NOTHROW(r = host.handle(verb::kReset, "x", std::string("\xc1\xff\x00", 3)));
  CHECK(error_code(r) == "bad_request");
  // Nothing is left pending in the interpreter after either.
  CHECK(PyErr_Occurred() == nullptr);
}

TEST_CASE("Host::handle: an instance id that is not UTF-8 gives an error reply") {
  Host host{Args{}};
  const std::string bad_id("inst-\xff\xfe", 7);
  for (const auto v : {verb::kMake, verb::kStep, verb::kReset, verb::kClose}) {
    Reply r;
    const std::string b = v == verb::kMake ? make_body("CartPole-v1") : body({{"action", protocol::Value(0)}});
    REQUIRE_NOTHROW(r = host.handle(v, bad_id, b));
    INFO("verb " << v);
    // The id cannot become a Python str: the decode error is reported as any exception at the env
    // boundary is, by host.py's error_map.
    CHECK(error_code(r) == "env_error");
    CHECK(field(field(decoded(r.body), "details"), "type").as_string() == "UnicodeDecodeError");
    CHECK(PyErr_Occurred() == nullptr);
  }
  // The host still serves well-formed requests afterwards.
  CHECK(host.handle(verb::kMake, "ok-1", make_body("CartPole-v1")).status == protocol::kStatusOk);
  CHECK(host.handle(verb::kClose, "ok-1", "").status == protocol::kStatusOk);
}

TEST_CASE("Host::handle: an env that raises gives env_error with its type and message") {
  Host host{Args{}};
  py::exec(R"(
import gymnasium as gym

class _WorkerTestRaises(gym.Env):
    observation_space = gym.spaces.Discrete(3)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        raise ValueError(f"the env broke on action {action}")

if "WorkerTest/Raises-v0" not in gym.registry:
    gym.register("WorkerTest/Raises-v0", entry_point=_WorkerTestRaises)
)");
  REQUIRE(host.handle(verb::kMake, "raises-1", make_body("WorkerTest/Raises-v0")).status == protocol::kStatusOk);
  REQUIRE(host.handle(verb::kReset, "raises-1", body({})).status == protocol::kStatusOk);
  Reply r;
  REQUIRE_NOTHROW(r = host.handle(verb::kStep, "raises-1", body({{"action", protocol::Value(1)}})));
  CHECK(error_code(r) == "env_error");
  const protocol::Value e = decoded(r.body);
  CHECK(field(e, "message").as_string() == "ValueError: the env broke on action 1");
  const protocol::Value& details = field(e, "details");
  CHECK(field(details, "type").as_string() == "ValueError");
  CHECK(field(details, "message").as_string() == "the env broke on action 1");
  CHECK(field(details, "traceback").as_string().find("in step") != std::string::npos);
  CHECK(PyErr_Occurred() == nullptr);
  CHECK(host.handle(verb::kClose, "raises-1", "").status == protocol::kStatusOk);
}

TEST_CASE("error_body: a message that is not UTF-8 is decoded with replacements") {
  const std::string body_bytes = gymfarm::worker::error_body("bad_request", std::string("bad \xff id", 8));
  const protocol::Value e = decoded(body_bytes);
  CHECK(field(e, "code").as_string() == "bad_request");
  CHECK(field(e, "message").as_string() == "bad \xEF\xBF\xBD id");
  const protocol::Value f = decoded(gymfarm::worker::fallback_error_body());
  CHECK(field(f, "code").as_string() == "env_error");
}
