// The loop's deadlines on a ManualClock: a request past its deadline is answered `timeout` and its
// worker killed, a lease runs out, an idle instance of the gateway's clients is closed.
#include <catch2/catch.hpp>

#include <vector>

#include "broker/deadlines.hpp"

using namespace gymfarm::broker;
using gymfarm::protocol::ErrorCode;
using namespace std::chrono_literals;

namespace {

struct Recorder final : DeadlineActions {
  struct Failed {
    std::string verb;
    std::string client;
    ErrorCode code;
    std::string message;
  };
  void fail(const Request& r, const gymfarm::protocol::Error& e) override {
    failed.push_back({r.verb, r.client, e.code, e.message});
  }
  void kill_worker(std::size_t w, std::string why) override { killed.emplace_back(w, std::move(why)); }
  void close_idle(std::size_t w, const std::string& instance) override { closed.emplace_back(w, instance); }
  void end_session(const std::string& key, const std::string& how) override { ended.emplace_back(key, how); }
  std::vector<Failed> failed;
  std::vector<std::pair<std::size_t, std::string>> killed;
  std::vector<std::pair<std::size_t, std::string>> closed;
  std::vector<std::pair<std::string, std::string>> ended;
};

std::string alice() { return client_key(ClientPath::Tcp, "alice", "0000000000000001"); }
std::string gateway() { return client_key(ClientPath::Inproc, "rest"); }

struct Loop {
  explicit Loop(DeadlineOptions o) : registry(2, clock), deadlines(registry, sessions, admission, clock, o) {
    for (std::size_t i = 0; i < 2; ++i) {
      registry.spawned(i, "w" + std::to_string(i) + ".0", 100 + static_cast<int>(i));
      registry.ready(i);
    }
  }
  static DeadlineOptions options() {
    DeadlineOptions o;
    o.step_timeout = 1s;
    o.make_timeout = 5s;
    o.idle_ttl = 30s;
    o.session_lease = 2s;
    return o;
  }
  ManualClock clock;
  WorkerRegistry registry;
  SessionTable sessions{16};
  Admission admission{{0, 100}};  // in-flight requests are counted only under a limit
  Deadlines deadlines;
  Recorder act;
};

Request request(std::string verb, std::string client, std::string instance) {
  Request r;
  r.verb = std::move(verb);
  r.client = std::move(client);
  r.instance = std::move(instance);
  return r;
}

}  // namespace

TEST_CASE("deadlines: a request at its deadline gets `timeout` and its worker is killed") {
  Loop l(Loop::options());
  REQUIRE(l.registry.assign(0, "i0", "CartPole-v1"));
  REQUIRE(l.registry.assign(1, "i1", "CartPole-v1"));
  REQUIRE(l.registry.begin(0, request("step", alice(), "i0"), 1, l.deadlines.timeout_for("step")));
  REQUIRE(l.registry.begin(1, request("make", alice(), "i1"), 2, l.deadlines.timeout_for("make")));
  l.clock.advance(999ms);
  l.deadlines.check(l.act);
  CHECK(l.act.failed.empty());  // before the deadline
  l.clock.advance(1ms);
  l.deadlines.check(l.act);
  REQUIRE(l.act.failed.size() == 1);  // the make has 5 s
  CHECK(l.act.failed[0].verb == "step");
  CHECK(l.act.failed[0].client == alice());
  CHECK(l.act.failed[0].code == ErrorCode::Timeout);
  CHECK(l.act.failed[0].message == "'step' did not finish within 1000 ms; the worker was killed");
  REQUIRE(l.act.killed.size() == 1);
  CHECK(l.act.killed[0] == std::make_pair(std::size_t{0}, std::string("'step' timed out after 1000 ms")));
  CHECK_FALSE(l.registry.slot(0).in_flight);
  l.deadlines.check(l.act);
  CHECK(l.act.failed.size() == 1);  // answered once
  l.clock.advance(4s);
  l.deadlines.check(l.act);
  REQUIRE(l.act.failed.size() == 2);
  CHECK(l.act.failed[1].verb == "make");
  CHECK(l.act.killed.back().first == 1);
}

TEST_CASE("deadlines: a session that stops renewing its lease ends; one with work in flight waits") {
  Loop l(Loop::options());
  const std::string bob = client_key(ClientPath::Tcp, "bob", "0000000000000002");
  auto idle = [](const std::string&) { return false; };
  REQUIRE(l.sessions.open(alice(), true, idle, false, 2s, l.clock.now()) == SessionTable::Open::Opened);
  REQUIRE(l.sessions.open(bob, true, idle, false, 2s, l.clock.now()) == SessionTable::Open::Opened);
  std::size_t counted = 0;
  REQUIRE(l.admission.begin(bob, counted));  // bob waits for a reply
  l.clock.advance(1500ms);
  l.deadlines.check(l.act);
  CHECK(l.act.ended.empty());
  l.clock.advance(1s);
  l.deadlines.check(l.act);
  REQUIRE(l.act.ended.size() == 1);
  CHECK(l.act.ended[0].first == alice());
  CHECK(l.act.ended[0].second == "stopped renewing its lease (2000 ms)");
}

TEST_CASE("deadlines: leases are checked at most every lease_check_interval") {
  auto o = Loop::options();
  o.lease_check_interval = 1s;
  Loop l(o);
  l.deadlines.check(l.act);  // checked at 0: next at 1 s
  REQUIRE(l.sessions.open(
              alice(), true, [](const std::string&) { return false; }, false, 100ms, l.clock.now()) ==
          SessionTable::Open::Opened);
  l.clock.advance(500ms);
  l.deadlines.check(l.act);
  CHECK(l.act.ended.empty());
  l.clock.advance(500ms);
  l.deadlines.check(l.act);
  CHECK(l.act.ended.size() == 1);
}

TEST_CASE("deadlines: the gateway's instances idle past --idle-ttl close; a native client's stay") {
  Loop l(Loop::options());
  REQUIRE(l.registry.assign(0, "rest-env", "CartPole-v1"));
  REQUIRE(l.registry.assign(1, "alice-env", "CartPole-v1"));
  l.admission.made("rest-env", gateway(), false);
  l.admission.made("alice-env", alice(), false);
  l.clock.advance(30s);
  l.deadlines.check(l.act);
  CHECK(l.act.closed.empty());
  l.clock.advance(1ms);
  l.deadlines.check(l.act);
  REQUIRE(l.act.closed.size() == 1);
  CHECK(l.act.closed[0] == std::make_pair(std::size_t{0}, std::string("rest-env")));
}

TEST_CASE("deadlines: no idle-ttl, no closing") {
  auto o = Loop::options();
  o.idle_ttl = Duration::zero();
  Loop l(o);
  REQUIRE(l.registry.assign(0, "rest-env", "CartPole-v1"));
  l.admission.made("rest-env", gateway(), false);
  l.clock.advance(24h);
  l.deadlines.check(l.act);
  CHECK(l.act.closed.empty());
}
