// The pool supervisor on a ManualClock with a FakeLauncher: growth, retirement, restarts with
// back-off and the budget, silent workers.
#include <catch2/catch.hpp>

#include "broker/pool_supervisor.hpp"
#include "tests/unit/broker/fake_launcher.hpp"

using namespace gymfarm::broker;
using gymfarm::broker::testing::FakeLauncher;
using namespace std::chrono_literals;

namespace {

struct Pool {
  explicit Pool(std::size_t workers, std::size_t max_workers, std::size_t budget_limit = 10)
      : registry(workers, clock),
        budget(budget_limit, 60s),
        pool(registry, clock, fake, budget, options(workers, max_workers)) {}
  static PoolOptions options(std::size_t workers, std::size_t max_workers) {
    PoolOptions o;
    o.workers = workers;
    o.max_workers = max_workers;
    o.idle_grace = 5s;
    o.heartbeat_timeout = 3s;
    o.startup_timeout = 10s;
    return o;
  }
  // Starts every slot and has each say ready.
  void start_all() {
    for (std::size_t i = 0; i < registry.size(); ++i) pool.spawn(i);
    for (std::size_t i = 0; i < registry.size(); ++i) ready(i);
  }
  void ready(std::size_t i) {
    registry.ready(i);
    registry.heartbeat(i);
  }
  ManualClock clock;
  WorkerRegistry registry;
  RestartBudget budget;
  FakeLauncher fake;
  PoolSupervisor pool;
};

}  // namespace

TEST_CASE("pool supervisor: spawns through the launcher with a fresh identity per process") {
  Pool p(2, 2);
  p.start_all();
  REQUIRE(p.fake.launches.size() == 2);
  CHECK(p.fake.launches[0].slot == 0);
  CHECK(p.fake.launches[0].identity == "w0.0");
  CHECK(p.fake.launches[1].identity == "w1.0");
  CHECK(p.registry.slot(1).pid == p.fake.launches[1].pid);
  CHECK(p.registry.count(WorkerState::Idle) == 2);
  CHECK(p.registry.slot(0).restarts == 0);
}

TEST_CASE("pool supervisor: a launch answered later (zygote) leaves the pid to come") {
  Pool p(1, 1);
  p.fake.pending = true;
  p.pool.spawn(0);
  CHECK(p.registry.slot(0).state == WorkerState::Starting);
  CHECK(p.registry.slot(0).pid == 0);
  p.pool.fork_failed(0);
  CHECK(p.registry.slot(0).state == WorkerState::Dead);
  CHECK(p.registry.slot(0).consecutive_failures == 1);
  CHECK(p.registry.slot(0).respawn_at == p.clock.now() + 100ms);
}

TEST_CASE("pool supervisor: grows on demand up to max_workers") {
  Pool p(1, 3);
  p.start_all();
  auto a = p.pool.grow();
  auto b = p.pool.grow();
  REQUIRE(a);
  REQUIRE(b);
  CHECK(*a == 1);
  CHECK(*b == 2);
  CHECK_FALSE(p.pool.grow());  // at the bound
  CHECK(p.registry.wanted() == 3);
  CHECK(p.fake.launches.size() == 3);
  CHECK(p.registry.slot(2).state == WorkerState::Starting);
  CHECK(p.registry.slot(2).restarts == 0);  // growth is no restart
}

TEST_CASE("pool supervisor: workers beyond the warm pool retire after the idle grace") {
  Pool p(1, 3);
  p.start_all();
  p.pool.grow();
  p.pool.grow();
  p.ready(1);
  p.ready(2);
  REQUIRE(p.registry.assign(2, "busy", "E"));  // one holds an instance: it stays
  p.clock.advance(4s);
  CHECK(p.pool.retire_idle(p.clock.now()).empty());  // within the grace
  p.clock.advance(2s);
  auto retired = p.pool.retire_idle(p.clock.now());
  REQUIRE(retired.size() == 2);  // down to the warm pool's size, never below
  CHECK(retired[0] == 1);
  CHECK(retired[1] == 0);
  CHECK(p.registry.wanted() == 1);
  CHECK(p.registry.slot(1).state == WorkerState::Stopping);
  CHECK_FALSE(p.registry.slot(1).wanted);
  CHECK(p.registry.slot(2).state == WorkerState::Assigned);
  REQUIRE(p.registry.release(2, "busy"));
  p.clock.advance(10s);
  CHECK(p.pool.retire_idle(p.clock.now()).empty());  // the last one is the warm pool
  // a retired worker's graceful exit is no failure, and the slot is not restarted
  p.pool.gone(1, "exited with code 0");
  CHECK(p.registry.slot(1).consecutive_failures == 0);
  p.clock.advance(1s);
  p.pool.respawn_due(p.clock.now());
  CHECK(p.fake.launches.size() == 3);
  // growing again reuses a retired slot
  p.pool.gone(0, "exited with code 0");
  CHECK(p.pool.grow() == std::optional<std::size_t>(0));
  CHECK(p.fake.launches.size() == 4);
}

TEST_CASE("pool supervisor: a death within the budget restarts after a back-off") {
  Pool p(1, 1);
  p.start_all();
  // a death while starting counts towards the back-off: 100 ms, 200 ms, 400 ms
  p.pool.gone(0, "killed by signal 9 (SIGKILL)");
  CHECK(p.registry.slot(0).consecutive_failures == 0);  // it had served: no back-off
  p.pool.respawn_due(p.clock.now());
  REQUIRE(p.fake.launches.size() == 2);
  CHECK(p.fake.launches[1].identity == "w0.1");
  CHECK(p.registry.slot(0).restarts == 1);
  p.pool.gone(0, "exited with code 1 during start-up");
  CHECK(p.registry.slot(0).consecutive_failures == 1);
  p.clock.advance(99ms);
  p.pool.respawn_due(p.clock.now());
  CHECK(p.fake.launches.size() == 2);  // still backing off
  p.clock.advance(1ms);
  p.pool.respawn_due(p.clock.now());
  CHECK(p.fake.launches.size() == 3);
  p.pool.gone(0, "exited with code 1 during start-up");
  CHECK(p.registry.slot(0).respawn_at == p.clock.now() + 200ms);
  CHECK(p.budget.used(p.clock.now()) == 2);
  REQUIRE(p.budget.log().size() == 2);
  CHECK(p.budget.log().back().reason == "exited with code 1 during start-up");
  CHECK(PoolSupervisor::backoff(0) == Duration::zero());
  CHECK(PoolSupervisor::backoff(20) == Duration(10s));
}

TEST_CASE("pool supervisor: a launch that fails backs off and is retried") {
  Pool p(1, 1);
  p.fake.fail_next = 1;
  p.pool.spawn(0);
  CHECK(p.registry.slot(0).state == WorkerState::Dead);
  CHECK(p.registry.slot(0).last_exit == "spawn failed: fake launch failure");
  CHECK(p.registry.slot(0).respawn_at == p.clock.now() + 100ms);
  p.pool.respawn_due(p.clock.now());
  CHECK(p.fake.launches.empty());
  p.clock.advance(100ms);
  p.pool.respawn_due(p.clock.now());
  REQUIRE(p.fake.launches.size() == 1);
  CHECK(p.budget.used(p.clock.now()) == 0);  // never started before: no restart counted
}

TEST_CASE("pool supervisor: past the restart budget a restart waits for the window") {
  Pool p(2, 2, /*budget_limit=*/1);
  p.start_all();
  p.pool.gone(0, "killed by signal 9 (SIGKILL)");
  p.pool.gone(1, "killed by signal 9 (SIGKILL)");
  p.pool.respawn_due(p.clock.now());
  REQUIRE(p.fake.launches.size() == 3);  // slot 0 restarted, slot 1 waits
  CHECK(p.fake.launches[2].slot == 0);
  CHECK(p.registry.slot(1).state == WorkerState::Dead);
  CHECK(p.registry.slot(1).respawn_at == p.clock.now() + 60s);
  p.clock.advance(59s);
  p.pool.respawn_due(p.clock.now());
  CHECK(p.fake.launches.size() == 3);
  p.clock.advance(1s);
  p.pool.respawn_due(p.clock.now());
  REQUIRE(p.fake.launches.size() == 4);
  CHECK(p.fake.launches[3].slot == 1);
}

TEST_CASE("pool supervisor: a silent worker is killed once, with the reason kept for its exit") {
  Pool p(2, 2);
  p.start_all();
  p.clock.advance(2s);
  p.registry.heartbeat(1);  // slot 1 keeps beating
  CHECK(p.pool.kill_silent(p.clock.now()).empty());
  p.clock.advance(1500ms);
  auto killed = p.pool.kill_silent(p.clock.now());
  REQUIRE(killed.size() == 1);
  CHECK(killed[0] == 0);
  const int pid = p.registry.slot(0).pid;
  REQUIRE(p.fake.kills.size() == 1);
  CHECK(p.fake.kills[0] == std::make_pair(pid, SIGKILL));
  CHECK(p.pool.kill_silent(p.clock.now()).empty());  // not killed twice while its exit is awaited
  REQUIRE(p.pool.kill_reason(pid));
  CHECK(*p.pool.kill_reason(pid) == "its heartbeats stopped");
  CHECK(p.pool.take_kill_reason(pid) == std::optional<std::string>("its heartbeats stopped"));
  CHECK_FALSE(p.pool.kill_reason(pid));
}

TEST_CASE("pool supervisor: a worker that does not start in time is killed") {
  Pool p(1, 1);
  p.pool.spawn(0);
  p.clock.advance(10s + 1ms);
  auto killed = p.pool.kill_silent(p.clock.now());
  REQUIRE(killed.size() == 1);
  CHECK(*p.pool.kill_reason(p.registry.slot(0).pid) == "it did not start in time");
}
