// What `stats` answers, built from a registry and a restart budget on a manual clock, with the
// process memory read from a fake.
#include <catch2/catch.hpp>

#include <unistd.h>

#include "broker/stats.hpp"

using namespace gymfarm::broker;
using namespace std::chrono_literals;
using gymfarm::protocol::Value;

TEST_CASE("stats: the live workers with their memory, the budget, the pool and the counters") {
  ManualClock clock;
  WorkerRegistry r(3, clock);
  REQUIRE(r.spawned(0, "w0.0", 100));
  REQUIRE(r.ready(0));
  REQUIRE(r.assign(0, "inst", "CartPole-v1"));
  REQUIRE(r.spawned(1, "w1.0", 101));  // still starting
  r.slot(2).wanted = false;            // retired: no process, left out
  RestartBudget budget(32, 60s);
  budget.record(clock.now(), 1, "killed by signal 9");
  clock.advance(2s);
  Stats stats([](int pid) { return pid * 1000LL; }, [](int pid) { return pid * 10LL; });
  stats.requests = 7;
  stats.heartbeats = 42;
  const Value v = stats.report(r, budget, 1, {2, 8}, {1000ms, 2000, 250ms}, clock.now(), "tcp://127.0.0.1:5555", 4242);

  const auto& workers = v.find("workers")->as_array();
  REQUIRE(workers.size() == 2);
  CHECK(workers[0].find("pid")->as_int() == 100);
  CHECK(workers[0].find("state")->as_string() == "assigned");
  CHECK(workers[0].find("instance")->as_string() == "inst");
  CHECK(workers[0].find("env_id")->as_string() == "CartPole-v1");
  CHECK(workers[0].find("rss_bytes")->as_int() == 100000);
  CHECK(workers[0].find("pss_bytes")->as_int() == 1000);
  CHECK(workers[1].find("state")->as_string() == "starting");
  CHECK(workers[1].find("instance")->as_string().empty());

  CHECK(v.find("restart_budget")->find("limit")->as_int() == 32);
  CHECK(v.find("restart_budget")->find("used")->as_int() == 1);
  const auto& recent = v.find("recent_restarts")->as_array();
  REQUIRE(recent.size() == 1);
  CHECK(recent[0].find("reason")->as_string() == "killed by signal 9");
  CHECK(recent[0].find("seconds_ago")->as_double() == Approx(2.0));

  CHECK(v.find("instances")->as_int() == 1);
  CHECK(v.find("pool")->find("warm")->as_int() == 2);
  CHECK(v.find("pool")->find("max")->as_int() == 8);
  CHECK(v.find("pool")->find("live")->as_int() == 2);
  CHECK(v.find("requests")->as_int() == 7);
  const Value* hb = v.find("heartbeats");
  CHECK(hb->find("period_ms")->as_int() == 1000);
  CHECK(hb->find("max_rate")->as_int() == 2000);
  CHECK(hb->find("received")->as_int() == 42);
  CHECK(hb->find("excused_ms")->as_int() == 250);
  CHECK(v.find("frontend")->as_string() == "tcp://127.0.0.1:5555");
  CHECK(v.find("pid")->as_int() == 4242);
}

TEST_CASE("stats: a process that cannot be read has no memory") {
  CHECK(proc_rss_bytes(0) == 0);
  CHECK(proc_pss_bytes(-1) == 0);
  CHECK(proc_rss_bytes(::getpid()) > 0);
}

TEST_CASE("stats: who made each hosted instance, when asked with the owners") {
  ManualClock clock;
  WorkerRegistry r(1, clock, 2);
  REQUIRE(r.spawned(0, "w0.0", 100));
  REQUIRE(r.ready(0));
  REQUIRE(r.assign(0, "mine", "CartPole-v1"));
  REQUIRE(r.assign(0, "orphan", "CartPole-v1"));
  Admission admission({});
  admission.made("mine", client_key(ClientPath::Local, "s"), true, SessionLabel{7, "trainer"});
  RestartBudget budget(32, 60s);
  Stats stats([](int) { return 0LL; }, [](int) { return 0LL; });
  const Value without = stats.report(r, budget, 2, {1, 1}, {}, clock.now(), "x", 1);
  CHECK(without.find("workers")->as_array()[0].find("owners") == nullptr);
  const Value v = stats.report(r, budget, 2, {1, 1}, {}, clock.now(), "x", 1, 2, &admission);
  const auto& owners = v.find("workers")->as_array()[0].find("owners")->as_array();
  REQUIRE(owners.size() == 2);  // one per entry of `instances`, in its order
  CHECK(owners[0].find("session")->as_int() == 7);
  CHECK(owners[0].find("client")->as_string() == "trainer");
  CHECK(owners[0].find("via")->as_string() == "local");
  CHECK(owners[0].find("shared")->as_bool());
  CHECK(owners[1].find("session") == nullptr);  // made by no one Admission knows: an empty map
}
