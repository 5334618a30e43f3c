#include <catch2/catch.hpp>

#include "broker/routing_table.hpp"

using namespace gymfarm;

TEST_CASE("routes map instances to workers; ids are never reused") {
  broker::RoutingTable t;
  REQUIRE(t.add("a", 0, "CartPole-v1"));
  REQUIRE(t.add("b", 1, "Taxi-v3"));
  CHECK_FALSE(t.add("a", 2, "X"));
  CHECK(t.find("a") == 0u);
  CHECK(*t.env_id("b") == "Taxi-v3");
  CHECK_FALSE(t.find("zzz"));
  t.remove("a");
  CHECK_FALSE(t.find("a"));
  CHECK(t.size() == 1);
}

TEST_CASE("a buried instance answers with its tombstone error") {
  broker::RoutingTable t;
  t.add("a", 3, "CartPole-v1");
  t.bury("a", protocol::Error{protocol::ErrorCode::WorkerCrashed, "killed by signal 9", {}});
  CHECK_FALSE(t.find("a"));
  REQUIRE(t.tombstone("a"));
  CHECK(t.tombstone("a")->code == protocol::ErrorCode::WorkerCrashed);
  CHECK_FALSE(t.add("a", 1, "CartPole-v1"));  // never silently re-created
}

TEST_CASE("tombstones are bounded, oldest first out") {
  broker::RoutingTable t(2);
  for (const char* id : {"a", "b", "c"}) {
    t.add(id, 0, "E");
    t.bury(id, protocol::Error{});
  }
  CHECK_FALSE(t.tombstone("a"));
  CHECK(t.tombstone("b"));
  CHECK(t.tombstone("c"));
}
