// The worker life-cycle state machine and the deadlines, on a manual clock.
#include <catch2/catch.hpp>

#include "broker/worker_registry.hpp"

using namespace gymfarm::broker;
using namespace std::chrono_literals;

TEST_CASE("the life of a worker slot") {
  ManualClock clock;
  WorkerRegistry r(2, clock);
  CHECK(r.count(WorkerState::Dead) == 2);
  CHECK_FALSE(r.ready(0));             // Dead cannot become ready
  CHECK_FALSE(r.assign(0, "i", "E"));  // nor take an env
  REQUIRE(r.spawned(0, "w0.0", 100));
  CHECK(r.slot(0).state == WorkerState::Starting);
  CHECK_FALSE(r.spawned(0, "w0.1", 101));  // already alive
  CHECK_FALSE(r.assign(0, "i", "E"));      // not ready yet
  CHECK_FALSE(r.worker_with_room());
  REQUIRE(r.ready(0));
  CHECK(r.worker_with_room() == 0u);
  REQUIRE(r.assign(0, "inst", "CartPole-v1"));
  REQUIRE(r.slot(0).hosted.size() == 1);
  CHECK(r.slot(0).hosted[0].instance == "inst");
  CHECK_FALSE(r.worker_with_room());
  CHECK_FALSE(r.assign(0, "more", "CartPole-v1"));  // one env per worker by default
  CHECK_FALSE(r.release(0, "other"));
  REQUIRE(r.release(0, "inst"));
  CHECK(r.slot(0).hosted.empty());
  CHECK(r.slot(0).state == WorkerState::Idle);
  REQUIRE(r.died(0, "killed by signal 9"));
  CHECK_FALSE(r.died(0, "twice"));
  CHECK(r.slot(0).last_exit == "killed by signal 9");
  REQUIRE(r.spawned(0, "w0.1", 102));
  CHECK(r.slot(0).restarts == 1);
}

TEST_CASE("identities: a new spawn's identity replaces the old; heartbeat identities resolve") {
  ManualClock clock;
  WorkerRegistry r(1, clock);
  r.spawned(0, "w0.0", 10);
  CHECK(r.by_identity("w0.0") == 0u);
  CHECK(r.by_identity("w0.0#hb") == 0u);
  r.died(0, "x");
  CHECK_FALSE(r.by_identity("w0.0"));
  r.spawned(0, "w0.1", 11);
  CHECK_FALSE(r.by_identity("w0.0"));
  CHECK(r.by_identity("w0.1") == 0u);
}

TEST_CASE("one request in flight per worker, with a deadline") {
  ManualClock clock;
  WorkerRegistry r(2, clock);
  r.spawned(0, "w0.0", 10);
  r.ready(0);
  r.assign(0, "i", "E");
  Request req;
  req.verb = "step";
  REQUIRE(r.begin(0, req, 7, 1000ms));
  CHECK_FALSE(r.begin(0, req, 8, 1000ms));
  clock.advance(999ms);
  CHECK(r.expired(clock.now()).empty());
  clock.advance(1ms);
  CHECK(r.expired(clock.now()) == std::vector<std::size_t>{0});
  CHECK_FALSE(r.finish(0, 8));  // wrong rid
  auto done = r.finish(0, 7);
  REQUIRE(done);
  CHECK(done->request.verb == "step");
  CHECK(r.expired(clock.now()).empty());
  CHECK_FALSE(r.begin(1, req, 9, 1s));  // a dead slot takes no request
}

TEST_CASE("idle instances: assigned, nothing in flight, no request for longer than the ttl") {
  ManualClock clock;
  WorkerRegistry r(2, clock);
  for (std::size_t i = 0; i < 2; ++i) {
    r.spawned(i, "w" + std::to_string(i), 10 + static_cast<int>(i));
    r.ready(i);
  }
  r.assign(0, "a", "E");
  clock.advance(5s);
  CHECK(r.idle_instances(clock.now(), 10s).empty());
  Request req;
  req.instance = "a";
  r.begin(0, req, 1, 100s);
  clock.advance(20s);
  CHECK(r.idle_instances(clock.now(), 10s).empty());  // busy, not idle
  r.finish(0, 1);
  clock.advance(9s);
  CHECK(r.idle_instances(clock.now(), 10s).empty());  // the request counts as activity
  clock.advance(12s);
  using Idle = std::vector<std::pair<std::size_t, std::string>>;
  CHECK(r.idle_instances(clock.now(), 10s) == Idle{{0, "a"}});  // worker 1 holds nothing
}

TEST_CASE("silence: missing heartbeats, and a start-up that takes too long") {
  ManualClock clock;
  WorkerRegistry r(2, clock);
  r.spawned(0, "w0.0", 10);
  r.spawned(1, "w1.0", 11);
  r.ready(0);
  clock.advance(2s);
  r.heartbeat(0);
  clock.advance(2s);
  CHECK(r.silent(clock.now(), 3s, 10s).empty());
  clock.advance(2s);  // worker 0 silent for 4 s; worker 1 starting for 6 s
  CHECK(r.silent(clock.now(), 3s, 10s) == std::vector<std::size_t>{0});
  clock.advance(5s);
  CHECK(r.silent(clock.now(), 3s, 10s) == std::vector<std::size_t>{0, 1});
}

TEST_CASE("a starting worker whose heartbeats stop is silent before the start-up timeout") {
  ManualClock clock;
  WorkerRegistry r(2, clock);
  REQUIRE(r.spawned(0, "w0.0", 100));
  REQUIRE(r.spawned(1, "w1.0", 101));
  r.heartbeat(0);  // worker 0's heartbeat thread runs; worker 1 has not sent one yet
  clock.advance(4s);
  CHECK(r.silent(clock.now(), 3s, 60s) == std::vector<std::size_t>{0});  // stopped during start-up
  REQUIRE(r.died(0, "killed"));
  REQUIRE(r.spawned(0, "w0.1", 102));
  clock.advance(4s);
  CHECK(r.silent(clock.now(), 3s, 60s).empty());  // a new process is judged by its own heartbeats
}

TEST_CASE("several envs per worker: least loaded first, Idle again when the last one goes") {
  ManualClock clock;
  WorkerRegistry r(2, clock, 3);
  for (std::size_t i = 0; i < 2; ++i) {
    r.spawned(i, "w" + std::to_string(i), 10 + static_cast<int>(i));
    r.ready(i);
  }
  // spread over both workers before packing
  std::vector<std::size_t> placed;
  for (int k = 0; k < 6; ++k) {
    auto w = r.worker_with_room();
    REQUIRE(w);
    REQUIRE(r.assign(*w, "i" + std::to_string(k), "E"));
    placed.push_back(*w);
  }
  CHECK(placed == std::vector<std::size_t>{0, 1, 0, 1, 0, 1});
  CHECK_FALSE(r.worker_with_room());  // 2 workers x 3 envs
  REQUIRE(r.release(0, "i2"));
  CHECK(r.worker_with_room() == 0u);
  CHECK(r.slot(0).state == WorkerState::Assigned);
  REQUIRE(r.release(0, "i0"));
  REQUIRE(r.release(0, "i4"));
  CHECK(r.slot(0).state == WorkerState::Idle);
  // idle instances are per instance: one busy env does not keep its neighbour alive
  clock.advance(20s);
  Request req;
  req.kind = Request::StepMany{1, {{"i1", "", 0}}};
  r.begin(1, req, 7, 100s);
  using Idle = std::vector<std::pair<std::size_t, std::string>>;
  CHECK(r.idle_instances(clock.now(), 10s) == Idle{{1, "i3"}, {1, "i5"}});
  // a death takes every env of the worker
  REQUIRE(r.died(1, "killed"));
  CHECK(r.slot(1).hosted.empty());
}
