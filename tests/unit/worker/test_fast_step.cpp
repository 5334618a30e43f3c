// The worker's C++ step (Host::fast_step) against host.py's step: for real envs and an env that
// takes every path host.py keeps (infos holding tuples, warnings, ended same_step episodes, a
// result that is not a 5-tuple, a Tuple action space), the reply is the same, byte for byte.
#include <catch2/catch.hpp>

#include <string>

#include <pybind11/embed.h>

#include "tests/unit/worker/support.hpp"
#include "worker/host.hpp"
#include "worker/py_codec.hpp"

using namespace gymfarm::worker::test;

namespace {

void register_paths_env() {
  py::exec(R"(
import warnings
import gymnasium as gym
import numpy as np

class _WorkerTestPaths(gym.Env):
    """Each step takes another of host.py's paths, by the step count."""
    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(4)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {"start": np.int64(self.t)}

    def step(self, action):
        self.t += 1
        obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        info = {"t": self.t, "x": np.float64(self.t / 3)}
        k = self.t % 6
        if k == 1:
            info["pair"] = (1, "two")  # a tuple: marked for the client
        elif k == 2:
            info["deep"] = {"list": [1, (2, 3)]}
        elif k == 3:
            warnings.warn(f"step {self.t}")
        elif k == 4:
            info = {}
        return obs, np.float32(action) / 2, self.t % 7 == 0, self.t % 11 == 0, info

class _WorkerTestList(_WorkerTestPaths):
    def step(self, action):
        return list(super().step(action))  # not a tuple: host.py unpacks it

class _WorkerTestTupleAction(_WorkerTestPaths):
    action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(2)))

    def step(self, action):
        assert isinstance(action, tuple), type(action)
        return super().step(action[0] + 2 * action[1])

for _id, _cls in (("WorkerTest/Paths-v0", _WorkerTestPaths), ("WorkerTest/List-v0", _WorkerTestList),
                  ("WorkerTest/TupleAction-v0", _WorkerTestTupleAction)):
    if _id not in gym.registry:  # the env checker would refuse the list
        gym.register(_id, entry_point=_cls, disable_env_checker=True)
)");
}

// Steps two instances of env_id made and seeded alike, one through Host::handle, the other through
// host.py's step packed as the worker packs a result; every reply must be the same bytes.
void same_replies(Host& host, const char* env_id, const char* autoreset, int steps) {
  INFO(env_id << " autoreset " << (autoreset ? autoreset : "nil"));
  REQUIRE(host.handle(verb::kMake, "fast", make_body(env_id)).status == protocol::kStatusOk);
  REQUIRE(host.handle(verb::kMake, "py", make_body(env_id)).status == protocol::kStatusOk);
  const std::string seed = body({{"seed", protocol::Value(7)}});
  REQUIRE(host.handle(verb::kReset, "fast", seed).body == host.handle(verb::kReset, "py", seed).body);
  py::module_ m = py::module_::import("gymfarm_host");
  py::object space = m.attr("_envs")["fast"].attr("env").attr("action_space");
  space.attr("seed")(3);
  py::object mode = autoreset ? py::object(py::str(autoreset)) : py::object(py::none());
  for (int i = 0; i < steps; ++i) {
    INFO("step " << i);
    py::dict req;
    req["action"] = space.attr("sample")();
    req["autoreset"] = mode;
    const std::string request = gymfarm::worker::pack(req);
    const Reply fast = host.handle(verb::kStep, "fast", request);
    REQUIRE(fast.status == protocol::kStatusOk);
    py::dict d = gymfarm::worker::unpack(request);
    const std::string expected = gymfarm::worker::pack(m.attr("step")("py", d["action"], d["autoreset"], py::none()));
    REQUIRE(fast.body == expected);
    if (!autoreset) {
      const protocol::Value v = decoded(fast.body);
      if (field(v, "terminated").as_bool() || field(v, "truncated").as_bool()) {
        REQUIRE(host.handle(verb::kReset, "fast", "").body == host.handle(verb::kReset, "py", "").body);
      }
    }
  }
  CHECK(host.handle(verb::kClose, "fast", "").status == protocol::kStatusOk);
  CHECK(host.handle(verb::kClose, "py", "").status == protocol::kStatusOk);
}

}  // namespace

TEST_CASE("Host: the C++ step gives host.py's step reply byte for byte") {
  Host host{Args{}};
  register_paths_env();
  for (const char* mode : {static_cast<const char*>(nullptr), "next_step", "same_step"}) {
    for (const char* env_id : {"CartPole-v1", "Pendulum-v1", "FrozenLake-v1", "Taxi-v3", "Blackjack-v1",
                               "WorkerTest/Paths-v0", "WorkerTest/List-v0", "WorkerTest/TupleAction-v0"}) {
      same_replies(host, env_id, mode, 120);
    }
  }
  CHECK(PyErr_Occurred() == nullptr);
}

TEST_CASE("Host: the C++ step's errors are host.py's") {
  Host host{Args{}};
  register_paths_env();
  REQUIRE(host.handle(verb::kMake, "p", make_body("WorkerTest/Paths-v0")).status == protocol::kStatusOk);
  // stepped before reset: the OrderEnforcing wrapper's error, from env.step called in C++
  Reply r = host.handle(verb::kStep, "p", body({{"action", protocol::Value(1)}}));
  CHECK(error_code(r) == "env_error");
  CHECK(field(decoded(r.body), "message").as_string().find("ResetNeeded") != std::string::npos);
  REQUIRE(host.handle(verb::kReset, "p", body({})).status == protocol::kStatusOk);
  r = host.handle(verb::kStep, "p",
                  body({{"action", protocol::Value(1)}, {"autoreset", protocol::Value("sometimes")}}));
  CHECK(error_code(r) == "bad_request");
  CHECK(field(decoded(r.body), "message").as_string() == "autoreset must be 'next_step', 'same_step' or nil");
  r = host.handle(verb::kStep, "nowhere", body({{"action", protocol::Value(1)}}));
  CHECK(error_code(r) == "bad_request");
  CHECK(PyErr_Occurred() == nullptr);
}

TEST_CASE("pack: numpy arrays and scalars travel as their dtype, shape and little-endian bytes") {
  // Numbers of every dtype the wire carries take the buffer path; big-endian, non-contiguous and
  // sliced arrays the numpy path; all must give the same tensor: dtype.str, shape, C-order bytes.
  py::dict cases = py::eval(R"({
    "f8": __import__("numpy").arange(6.0).reshape(2, 3),
    "f4 scalar": __import__("numpy").float32(1.5),
    "f8 scalar": __import__("numpy").float64(-2.25),
    "f2": __import__("numpy").ones(3, "float16"),
    "b1": __import__("numpy").array([True, False]),
    "bool_": __import__("numpy").bool_(True),
    "i1": __import__("numpy").arange(-3, 3, dtype="int8"),
    "u1": __import__("numpy").arange(200, 206, dtype="uint8"),
    "i2": __import__("numpy").arange(4, dtype="int16"),
    "u2": __import__("numpy").arange(4, dtype="uint16"),
    "i4": __import__("numpy").arange(4, dtype="int32"),
    "u4": __import__("numpy").arange(4, dtype="uint32"),
    "i8": __import__("numpy").arange(4, dtype="int64"),
    "u8 scalar": __import__("numpy").uint64(2**63 + 1),
    "big-endian": __import__("numpy").arange(4, dtype=">f4"),
    "transposed": __import__("numpy").arange(6, dtype="int32").reshape(2, 3).T,
    "strided": __import__("numpy").arange(10.0)[::3],
    "empty": __import__("numpy").zeros((0, 4), "float32"),
    "masked": __import__("numpy").ma.masked_array([1.0, 2.0], mask=[0, 1]),
  })");
  for (auto item : cases) {
    INFO(py::str(item.first).cast<std::string>());
    py::object arr = py::module_::import("numpy").attr("asarray")(item.second, py::arg("order") = "C");
    py::object dt = arr.attr("dtype").attr("newbyteorder")("<");
    const std::string want_dtype = dt.attr("str").cast<std::string>();
    const std::string want_bytes = arr.attr("astype")(dt).attr("tobytes")().cast<std::string>();
    py::dict d;
    d["x"] = item.second;
    const protocol::Value v = decoded(gymfarm::worker::pack(d));
    const protocol::Tensor& t = field(v, "x").as_tensor();
    CHECK(protocol::dtype_str(t.dtype) == want_dtype);
    CHECK(t.data == want_bytes);
    std::vector<uint64_t> shape;
    for (auto n : py::tuple(arr.attr("shape"))) shape.push_back(n.cast<uint64_t>());
    CHECK(t.shape == shape);
  }
  // Not numbers: a numpy str is a str, a complex array its repr.
  py::dict other = py::eval(R"({"s": __import__("numpy").str_("abc"), "c": __import__("numpy").array([1j])})");
  const protocol::Value v = decoded(gymfarm::worker::pack(other));
  CHECK(field(v, "s").as_string() == "abc");
  CHECK(field(v, "c").as_string() == "array([0.+1.j])");
}

namespace {

// A step_vec of k instances stepped through Host::handle against host.py's step_vec on twins made
// and seeded alike; the replies must be the same bytes once the errors' tracebacks (which name
// the frames they passed through) are left out.
void same_vec_replies(Host& host, const char* env_id, const char* autoreset, int k, int steps) {
  INFO(env_id << " autoreset " << (autoreset ? autoreset : "nil"));
  py::list fast, twin;
  for (int i = 0; i < k; ++i) {
    const std::string f = "vf" + std::to_string(i), t = "vp" + std::to_string(i);
    REQUIRE(host.handle(verb::kMake, f, make_body(env_id)).status == protocol::kStatusOk);
    REQUIRE(host.handle(verb::kMake, t, make_body(env_id)).status == protocol::kStatusOk);
    const std::string seed = body({{"seed", protocol::Value(10 + i)}});
    REQUIRE(host.handle(verb::kReset, f, seed).body == host.handle(verb::kReset, t, seed).body);
    fast.append(f);
    twin.append(t);
  }
  py::module_ m = py::module_::import("gymfarm_host");
  py::object space = m.attr("_envs")["vf0"].attr("env").attr("action_space");
  space.attr("seed")(5);
  py::object np = py::module_::import("numpy");
  py::object strip = py::eval(R"(lambda d: ([row[1]["details"].pop("traceback", None) for row in d["errors"]], d)[1])");
  py::object mode = autoreset ? py::object(py::str(autoreset)) : py::object(py::none());
  for (int s = 0; s < steps; ++s) {
    INFO("step " << s);
    py::list acts;
    for (int i = 0; i < k; ++i) acts.append(space.attr("sample")());
    py::dict req;
    req["instances"] = fast;
    req["actions"] = np.attr("stack")(acts);
    req["autoreset"] = mode;
    const Reply got = host.handle(verb::kStepVec, "", gymfarm::worker::pack(req));
    REQUIRE(got.status == protocol::kStatusOk);
    py::dict d = gymfarm::worker::unpack(gymfarm::worker::pack(req));
    py::object want = m.attr("step_vec")(twin, d["actions"], d["autoreset"]);
    REQUIRE(gymfarm::worker::pack(strip(gymfarm::worker::unpack(got.body))) == gymfarm::worker::pack(strip(want)));
    if (!autoreset) {  // without autoreset, ended episodes are reset by hand, alike
      py::dict reply = gymfarm::worker::unpack(got.body);
      for (int i = 0; i < k; ++i) {
        if (py::bool_(reply["terminated"][py::int_(i)]) || py::bool_(reply["truncated"][py::int_(i)])) {
          const std::string f = "vf" + std::to_string(i), t = "vp" + std::to_string(i);
          REQUIRE(host.handle(verb::kReset, f, "").body == host.handle(verb::kReset, t, "").body);
        }
      }
    }
  }
  for (int i = 0; i < k; ++i) {
    host.handle(verb::kClose, "vf" + std::to_string(i), "");
    host.handle(verb::kClose, "vp" + std::to_string(i), "");
  }
}

}  // namespace

TEST_CASE("Host: step_vec through the C++ step gives host.py's step_vec reply") {
  Host host{Args{}};
  register_paths_env();
  py::exec(R"(
import gymnasium as gym

class _WorkerTestFlaky(gym.make("WorkerTest/Paths-v0").unwrapped.__class__):
    """Raises on some steps: those rows are errors, the others stand."""
    def step(self, action):
        if int(action) == 3:
            raise ValueError("three")
        return super().step(action)

if "WorkerTest/Flaky-v0" not in gym.registry:
    gym.register("WorkerTest/Flaky-v0", entry_point=_WorkerTestFlaky, disable_env_checker=True)

import numpy as np

class _WorkerTestOdd(gym.Env):
    """Observations whose kind the action picks, so that a step_vec's rows differ: dtypes
    numpy.stack promotes, a big-endian array, 0-d arrays and NumPy scalars, a strided view."""
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(4)
    kinds = (lambda v: v, lambda v: v.astype(np.float64), lambda v: v.astype(">f4"),
             lambda v: np.repeat(v, 2)[::2])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.kinds[0](np.zeros(2, np.float32)), {}

    def step(self, action):
        a = int(action)
        return self.kinds[a](np.array([0.25, -0.5], np.float32) * (a + 1)), float(a), False, False, {}

class _WorkerTestOdd0(_WorkerTestOdd):
    """The same with rows of no dimension: 0-d arrays, NumPy scalars, Python floats."""
    action_space = gym.spaces.Discrete(3)
    kinds = (lambda v: v[0:1].reshape(()), lambda v: np.float32(v[0]), lambda v: float(v[0]))

for _id, _cls in (("WorkerTest/Odd-v0", _WorkerTestOdd), ("WorkerTest/Odd0-v0", _WorkerTestOdd0)):
    if _id not in gym.registry:
        gym.register(_id, entry_point=_cls, disable_env_checker=True)
)");
  for (const char* mode : {static_cast<const char*>(nullptr), "next_step", "same_step"}) {
    for (const char* env_id :
         {"CartPole-v1", "Pendulum-v1", "FrozenLake-v1", "WorkerTest/Paths-v0", "WorkerTest/List-v0",
          "WorkerTest/Flaky-v0", "WorkerTest/Odd-v0", "WorkerTest/Odd0-v0"}) {
      same_vec_replies(host, env_id, mode, 3, 60);
    }
  }
  CHECK(PyErr_Occurred() == nullptr);
}

TEST_CASE("Host: a step_vec whose rows numpy cannot stack fails as host.py's does") {
  Host host{Args{}};
  py::exec(R"(
import gymnasium as gym
import numpy as np

class _WorkerTestDeep(gym.Env):
    """64-dimensional observations: stacked, 65, more than numpy allows."""
    observation_space = gym.spaces.Box(-1.0, 1.0, (1,) * 64, np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros((1,) * 64, np.float32), {}

    def step(self, action):
        return np.zeros((1,) * 64, np.float32), 0.0, False, False, {}

if "WorkerTest/Deep-v0" not in gym.registry:
    gym.register("WorkerTest/Deep-v0", entry_point=_WorkerTestDeep, disable_env_checker=True)
)");
  py::list fast, twin;
  for (const char* id : {"deep-f0", "deep-f1", "deep-t0", "deep-t1"}) {
    REQUIRE(host.handle(verb::kMake, id, make_body("WorkerTest/Deep-v0")).status == protocol::kStatusOk);
    REQUIRE(host.handle(verb::kReset, id, "").status == protocol::kStatusOk);
    (std::string(id).find("-f") != std::string::npos ? fast : twin).append(id);
  }
  py::object np = py::module_::import("numpy");
  py::dict req;
  req["instances"] = fast;
  req["actions"] = np.attr("zeros")(2, "int64");
  const Reply got = host.handle(verb::kStepVec, "", gymfarm::worker::pack(req));
  REQUIRE(got.status == protocol::kStatusErr);
  std::string want;
  try {
    py::module_::import("gymfarm_host").attr("step_vec")(twin, req["actions"], py::none());
  } catch (py::error_already_set& e) {
    want = e.what();
  }
  REQUIRE(!want.empty());  // numpy.stack refused them there too
  const std::string message = field(decoded(got.body), "message").as_string();
  INFO(message << " against " << want);
  CHECK(want.find(message.substr(message.find(':') + 1)) != std::string::npos);
  for (const char* id : {"deep-f0", "deep-f1", "deep-t0", "deep-t1"}) host.handle(verb::kClose, id, "");
}
