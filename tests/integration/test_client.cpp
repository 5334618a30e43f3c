// The C++ client against a real farm: `gymfarm start` on 127.0.0.1 with a free port.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "client/client.hpp"
#include "protocol/codec.hpp"

using namespace gymfarm;
using protocol::Value;

namespace {

// Starts a farm in the foreground as a child; reads the endpoint it prints; SIGTERM at the end.
class Farm {
 public:
  explicit Farm(int workers) {
    const char* bin = std::getenv("GYMFARM_BIN");
    REQUIRE(bin);
    char tmpl[] = "/tmp/gf-cpp-XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    dir_ = tmpl;
    int out[2];
    REQUIRE(pipe(out) == 0);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);  // a test that crashes takes its farm with it
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      const std::string w = std::to_string(workers);
      execl(bin, bin, "start", "--workers", w.c_str(), "--max-workers", w.c_str(), "--native-port", "0", "--port", "0",
            "--gymnasium-http-port", "0", "--runtime-dir", dir_.c_str(), "--import", "gymfarm_testenvs",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out[1]);
    FILE* f = fdopen(out[0], "r");
    char line[512];
    while (fgets(line, sizeof line, f)) {
      std::string s(line);
      if (auto p = s.find("native:"); p != std::string::npos) {
        endpoint_ = s.substr(s.find("tcp://"));
        while (!endpoint_.empty() && (endpoint_.back() == '\n' || endpoint_.back() == ' ')) endpoint_.pop_back();
        break;
      }
    }
    out_ = f;
    REQUIRE_FALSE(endpoint_.empty());
  }
  ~Farm() {
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    fclose(out_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);  // best effort
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  pid_t pid_ = 0;
  std::string dir_, endpoint_;
  FILE* out_ = nullptr;
};

}  // namespace

TEST_CASE("the C++ client drives real envs and gets typed errors") {
  Farm farm(3);
  client::Client c(farm.endpoint());
  CHECK(c.hello().find("server")->as_string() == "gymfarm");
  CHECK(c.hello().find("workers")->as_int() == 3);

  SECTION("CartPole: spaces, reset, step, sample, close") {
    auto env = c.make("CartPole-v1");
    CHECK(env.instance_id.size() == 32);
    REQUIRE(env.observation_space.kind == protocol::Space::Kind::Box);
    CHECK(env.observation_space.dtype == protocol::DType::Float32);
    CHECK(env.observation_space.shape == std::vector<uint64_t>{4});
    CHECK(std::isinf(env.observation_space.high.as_double(1)));
    REQUIRE(env.action_space.kind == protocol::Space::Kind::Discrete);
    CHECK(env.action_space.n == 2);
    auto [obs, info] = c.reset(env.instance_id, 0);
    REQUIRE(obs.is_tensor());
    CHECK(env.observation_space.contains(obs));
    double total = 0;
    bool done = false;
    for (int t = 0; t < 600 && !done; ++t) {
      auto s = c.step(env.instance_id, Value(int64_t{t % 2}));
      CHECK(env.observation_space.contains(s.obs));
      total += s.reward;
      done = s.terminated || s.truncated;
    }
    CHECK(done);
    CHECK(total >= 1.0);
    CHECK(env.action_space.contains(c.sample(env.instance_id)));
    CHECK(c.list().find(env.instance_id)->as_string() == "CartPole-v1");
    c.close(env.instance_id);
    CHECK_THROWS_AS(c.step(env.instance_id, Value(0)), client::ClientError);
  }

  SECTION("errors are typed") {
    auto env = c.make("CartPole-v1");
    c.reset(env.instance_id, 1);
    try {
      c.step(env.instance_id, Value(5));  // CartPole's own check refuses it, as in-process
      FAIL("no error");
    } catch (const client::ClientError& e) {
      CHECK(e.code() == protocol::ErrorCode::EnvError);
    }
    try {
      c.make("NoSuchEnv-v0");
      FAIL("no error");
    } catch (const client::ClientError& e) {
      CHECK(e.code() == protocol::ErrorCode::BadRequest);
    }
    auto faulty = c.make("gymfarm_test/Faulty-v0");
    c.reset(faulty.instance_id, 0);
    try {
      c.step(faulty.instance_id, Value(1));
      FAIL("no error");
    } catch (const client::ClientError& e) {
      CHECK(e.code() == protocol::ErrorCode::EnvError);
      CHECK(e.error().details.find("type")->as_string() == "ValueError");
    }
    try {
      c.make("CartPole-v1");  // 3 workers, 2 taken: this one fits
      c.make("CartPole-v1");
      FAIL("no error");
    } catch (const client::ClientError& e) {
      CHECK(e.code() == protocol::ErrorCode::CapacityExhausted);
    }
  }

  SECTION("batched step of several instances in one message") {
    std::vector<std::string> ids;
    for (int i = 0; i < 3; ++i) {
      ids.push_back(c.make("Pendulum-v1").instance_id);
      c.reset(ids.back(), i);
    }
    std::vector<std::pair<std::string, Value>> actions;
    actions.reserve(ids.size() + 1);
    for (const auto& id : ids)
      actions.emplace_back(id, Value(protocol::Tensor::from<float>(protocol::DType::Float32, {0.5f}, {1})));
    actions.emplace_back(std::string(32, 'a'), Value(0));
    auto out = c.step_batch(actions);
    REQUIRE(out.size() == 4);
    for (int i = 0; i < 3; ++i) {
      REQUIRE(out[i].result);
      CHECK(out[i].result->obs.as_tensor().shape == std::vector<uint64_t>{3});
      CHECK(out[i].result->reward <= 0.0);
    }
    REQUIRE(out[3].error);
    CHECK(out[3].error->code == protocol::ErrorCode::UnknownInstance);
  }

  SECTION("stats") {
    Value s = c.stats();
    CHECK(s.find("workers")->as_array().size() == 3);
    CHECK(c.envs().size() > 10);
  }
}

TEST_CASE("on the farm's host the client moves to the local socket; the answers are the same") {
  Farm farm(2);
  client::Client local(farm.endpoint());
  client::ClientOptions zmq_only;
  zmq_only.local = false;
  client::Client remote(farm.endpoint(), zmq_only);
  CHECK(local.is_local());
  CHECK_FALSE(remote.is_local());
  const Value* a = local.hello().find("farm");
  const Value* b = remote.hello().find("farm");
  REQUIRE(a);
  REQUIRE(b);
  CHECK(*a == *b);
  std::vector<std::vector<Value>> episodes;
  for (client::Client* c : {&local, &remote}) {
    auto env = c->make("CartPole-v1");
    auto [obs, info] = c->reset(env.instance_id, 7);
    std::vector<Value> seen{obs};
    for (int t = 0; t < 20; ++t) seen.push_back(c->step(env.instance_id, Value(int64_t{t % 2})).obs);
    CHECK_THROWS_AS(c->step(std::string(32, 'b'), Value(0)), client::ClientError);
    c->close(env.instance_id);
    episodes.push_back(seen);
  }
  CHECK(episodes[0] == episodes[1]);
}

TEST_CASE("over the local socket step and reset go through the instance's slab: same answers, same errors") {
  Farm farm(2);
  client::Client with_slabs(farm.endpoint());
  client::ClientOptions socket_only;
  socket_only.shm = false;
  client::Client without(farm.endpoint(), socket_only);
  REQUIRE(with_slabs.is_local());
  std::vector<std::vector<Value>> episodes;
  std::vector<std::string> errors;
  for (client::Client* c : {&with_slabs, &without}) {
    auto env = c->make("CartPole-v1");
    CHECK(c->has_slab(env.instance_id) == (c == &with_slabs));
    const Value before = c->stats();
    auto [obs, info] = c->reset(env.instance_id, 11);
    std::vector<Value> seen{obs};
    for (int t = 0; t < 60; ++t) {
      auto r = c->step(env.instance_id, Value(int64_t{t % 2}));
      seen.push_back(r.obs);
      seen.push_back(Value(r.reward));
      if (r.terminated || r.truncated) seen.push_back(c->reset(env.instance_id).first);
    }
    try {
      c->step(env.instance_id, Value(int64_t{7}));  // outside Discrete(2): the env's own error
    } catch (const client::ClientError& e) {
      errors.push_back(e.error().message);
    }
    const Value after = c->stats();
    // through the slab only the stats call itself reached the broker between the two reads
    const auto requests = after.find("requests")->as_int() - before.find("requests")->as_int();
    if (c == &with_slabs) CHECK(requests == 1);
    if (c == &without) CHECK(requests > 60);
    c->close(env.instance_id);
    CHECK_FALSE(c->has_slab(env.instance_id));
    episodes.push_back(seen);
  }
  CHECK(episodes[0] == episodes[1]);
  REQUIRE(errors.size() == 2);
  CHECK(errors[0] == errors[1]);
}
