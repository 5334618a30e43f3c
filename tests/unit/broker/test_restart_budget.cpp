// The farm-wide restart budget on a manual clock.
#include <catch2/catch.hpp>

#include "broker/restart_budget.hpp"

using namespace gymfarm::broker;
using namespace std::chrono_literals;

TEST_CASE("the restart budget allows `limit` restarts per window, then waits for the oldest to leave") {
  ManualClock clock;
  RestartBudget b(3, 10s);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(b.allows(clock.now()));
    b.record(clock.now(), i, "crashed");
    clock.advance(1s);
  }
  CHECK(b.used(clock.now()) == 3);
  CHECK_FALSE(b.allows(clock.now()));
  // The first restart was at t=0, so the next fits at t=10.
  CHECK(b.next_allowed(clock.now()) - clock.now() == 7s);
  clock.advance(6s);
  CHECK_FALSE(b.allows(clock.now()));
  clock.advance(1s);
  CHECK(b.allows(clock.now()));
  CHECK(b.used(clock.now()) == 2);
  CHECK(b.next_allowed(clock.now()) == clock.now());
}

TEST_CASE("the restart log keeps the last events with their reasons") {
  ManualClock clock;
  RestartBudget b(0, 60s);  // unlimited
  for (std::size_t i = 0; i < RestartBudget::kLogSize + 5; ++i) {
    CHECK(b.allows(clock.now()));
    b.record(clock.now(), i, "reason " + std::to_string(i));
  }
  REQUIRE(b.log().size() == RestartBudget::kLogSize);
  CHECK(b.log().front().reason == "reason 5");
  CHECK(b.log().back().worker == RestartBudget::kLogSize + 4);
}
