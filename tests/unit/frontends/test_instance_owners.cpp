// Which dialect made each hosted instance and who owns it (frontends/instance_owners.hpp), from a
// `stats` reply as the broker writes it (workers' `instances` with their `owners`).
#include <catch2/catch.hpp>

#include "frontends/instance_owners.hpp"

using namespace gymfarm::frontends;
using gymfarm::protocol::Array;
using gymfarm::protocol::Map;
using gymfarm::protocol::Value;

namespace {

Value owner(int64_t session, const std::string& name, const std::string& via, bool shared) {
  return Value(Map{{"session", session}, {"client", name}, {"via", via}, {"shared", shared}});
}

Value worker(int64_t index, const std::string& env, Array instances, Array owners) {
  return Value(Map{{"worker", index},
                   {"env_id", env},
                   {"instances", Value(std::move(instances))},
                   {"owners", Value(std::move(owners))}});
}

}  // namespace

TEST_CASE("instance rows: native sessions by number and name, the gateway's by its tables") {
  Array workers;
  workers.push_back(worker(0, "CartPole-v1", {Value("n1"), Value("n2")},
                           {owner(3, "trainer", "local", false), owner(4, "viewer", "tcp", true)}));
  workers.push_back(
      worker(1, "Pendulum-v1", {Value("g1"), Value("r1"), Value("s1"), Value("x1")},
             {owner(1, "gymfarm-gateway", "gateway", false), owner(1, "gymfarm-gateway", "gateway", false),
              owner(1, "gymfarm-gateway", "gateway", false), owner(1, "gymfarm-gateway", "gateway", false)}));
  workers.push_back(Value(Map{{"worker", int64_t{2}}, {"env_id", ""}, {"instances", Value(Array{})}}));
  const Value stats(Map{{"workers", Value(std::move(workers))}});
  const std::map<std::string, GatewayInstance> gateway = {{"g1", {"gymie", "Gymie #2 (127.0.0.1)"}},
                                                          {"r1", {"rest", "REST"}},
                                                          {"s1", {"gym_server", "gym-server"}},
                                                          {"n1", {"rest", "a table cannot claim a native instance"}}};
  const auto rows = instance_rows(stats, gateway);
  REQUIRE(rows.size() == 6);
  CHECK(rows[0].instance == "n1");
  CHECK(rows[0].dialect == "native");
  CHECK(rows[0].owner == "session #3 trainer (local)");
  CHECK_FALSE(rows[0].viewable);  // another session's own instance
  CHECK(rows[1].owner == "session #4 viewer (tcp), shared");
  CHECK(rows[1].viewable);
  CHECK(rows[2].dialect == "gymie");
  CHECK(rows[2].owner == "Gymie #2 (127.0.0.1)");
  CHECK(rows[2].worker == 1);
  CHECK(rows[2].env_id == "Pendulum-v1");
  CHECK(rows[3].dialect == "rest");
  CHECK(rows[4].dialect == "gym_server");
  CHECK(rows[5].dialect == "gateway");  // the gateway's, in no table yet
  CHECK(rows[5].viewable);
  const auto by = instances_by_dialect(rows);
  CHECK(by.at("native") == 2);
  CHECK(by.at("gymie") == 1);
  CHECK(by.at("rest") == 1);
  CHECK(by.at("gym_server") == 1);
  CHECK(by.size() == 4);
}

TEST_CASE("instance rows: a reply without owners (an older broker) names no one and shows nothing") {
  Array workers;
  workers.push_back(
      Value(Map{{"worker", int64_t{0}}, {"env_id", "CartPole-v1"}, {"instances", Value(Array{Value("a")})}}));
  const auto rows = instance_rows(Value(Map{{"workers", Value(std::move(workers))}}), {});
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].dialect == "native");
  CHECK(rows[0].owner == "unknown");
  CHECK_FALSE(rows[0].viewable);
  CHECK(instance_rows(Value(Map{}), {}).empty());
}
