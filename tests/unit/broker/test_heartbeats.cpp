// Heartbeats that scale with the pool: the period, the silence that kills, the broker's own
// lateness excused, and the period each worker was told, on a manual clock.
#include <catch2/catch.hpp>

#include "broker/heartbeats.hpp"
#include "broker/worker_registry.hpp"

using namespace gymfarm::broker;
using namespace std::chrono_literals;

TEST_CASE("the period grows with the pool so the pool's heartbeats stay under the rate") {
  HeartbeatPolicy p;  // 2,000 a second
  CHECK(p.period(0) == 100ms);
  CHECK(p.period(1) == 100ms);
  CHECK(p.period(200) == 100ms);  // 200 x 10/s = 2,000/s
  CHECK(p.period(201) == 200ms);
  CHECK(p.period(2000) == 1000ms);
  CHECK(p.period(4096) == 2100ms);
  for (std::size_t n : {1, 50, 199, 200, 201, 999, 1000, 2000, 3333, 4096}) {
    const double rate = static_cast<double>(n) * 1000.0 / static_cast<double>(p.period(n).count());
    CHECK(rate <= 2000.0);
  }
  HeartbeatPolicy unbounded{0};
  CHECK(unbounded.period(4096) == 100ms);
  HeartbeatPolicy slow{10};
  CHECK(slow.period(4) == 400ms);
}

TEST_CASE("a silence kills after the timeout, or five periods where that is longer") {
  HeartbeatPolicy p;
  CHECK(p.allowed_silence(3s, 100ms) == 3s);
  CHECK(p.allowed_silence(3s, 600ms) == 3s);
  CHECK(p.allowed_silence(3s, 1000ms) == 5s);
}

TEST_CASE("a late turn of the broker loop is excused; a turn on time is not") {
  ManualClock c;
  TurnLateness late(50ms, 100ms);
  CHECK(late.turn(c.now()) == 0ms);  // the first turn has nothing to compare with
  c.advance(50ms);
  CHECK(late.turn(c.now()) == 0ms);
  c.advance(150ms);  // within the slack
  CHECK(late.turn(c.now()) == 0ms);
  c.advance(900ms);  // starved: the broker read nothing for 900 ms
  CHECK(late.turn(c.now()) == 850ms);
  c.advance(1ms);
  CHECK(late.turn(c.now()) == 0ms);
  CHECK(late.excused() == 850ms);
}

TEST_CASE("the broker's lateness does not count towards a worker's silence") {
  ManualClock clock;
  WorkerRegistry r(2, clock);
  r.spawned(0, "w0.0", 10);
  r.spawned(1, "w1.0", 11);
  r.ready(0);
  r.ready(1);
  r.heartbeat(0);
  r.heartbeat(1);
  TurnLateness late(50ms, 100ms);
  late.turn(clock.now());
  for (int i = 0; i < 4; ++i) {  // four turns of 900 ms each: the broker was starved, not the workers
    clock.advance(900ms);
    r.excuse(late.turn(clock.now()), clock.now());
  }
  CHECK(r.silent(clock.now(), 3s, 60s).empty());  // 3.6 s since the heartbeats, 3.4 s of it excused
  for (int i = 0; i < 70; ++i) {                  // the broker runs on time again; the workers stay silent
    clock.advance(50ms);
    r.excuse(late.turn(clock.now()), clock.now());
  }
  CHECK(r.silent(clock.now(), 3s, 60s) == std::vector<std::size_t>{0, 1});
  r.excuse(10s, clock.now());
  CHECK(r.slot(0).last_heartbeat == clock.now());  // an excuse never puts a heartbeat in the future
}

TEST_CASE("each worker is told its period once; silence is judged on the longest it may use") {
  ManualClock clock;
  WorkerRegistry r(1, clock);
  HeartbeatPolicy p;
  r.spawned(0, "w0.0", 10);
  r.ready(0);
  r.heartbeat(0);
  CHECK_FALSE(r.needs_period(0, 100ms));  // a new process starts at the base period
  REQUIRE(r.needs_period(0, 1000ms));
  r.told(0, 1000ms);
  CHECK_FALSE(r.needs_period(0, 1000ms));
  clock.advance(4500ms);
  CHECK(r.silent(clock.now(), 3s, 60s, p).empty());  // five periods of 1 s: not yet
  clock.advance(600ms);
  CHECK(r.silent(clock.now(), 3s, 60s, p) == std::vector<std::size_t>{0});
  r.heartbeat(0);
  REQUIRE(r.needs_period(0, 100ms));  // the pool shrank
  r.told(0, 100ms);
  clock.advance(4s);  // it may not have heard yet: still judged on 1 s
  CHECK(r.silent(clock.now(), 3s, 60s, p).empty());
  r.heartbeat(0);
  CHECK_FALSE(r.needs_period(0, 100ms));  // it beat since it was told: judged on 100 ms again
  clock.advance(3100ms);
  CHECK(r.silent(clock.now(), 3s, 60s, p) == std::vector<std::size_t>{0});
  REQUIRE(r.died(0, "killed"));
  REQUIRE(r.spawned(0, "w0.1", 11));
  CHECK(r.needs_period(0, 1000ms));  // a new process must be told again
}
