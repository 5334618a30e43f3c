// Ownership and the per-client limits, with client keys as the broker makes them (sessions.hpp).
#include <catch2/catch.hpp>

#include "broker/admission.hpp"
#include "broker/sessions.hpp"

using namespace gymfarm::broker;

namespace {
const std::string kAlice = client_key(ClientPath::Tcp, "alice", "0000000000000001");
const std::string kBob = client_key(ClientPath::Tcp, "bob", "0000000000000002");
const std::string kGatewayA = client_key(ClientPath::Inproc, "ws-1");
const std::string kGatewayB = client_key(ClientPath::Inproc, "rest-2");
}  // namespace

TEST_CASE("only the maker uses an instance, unless it was made shared; the gateway is one client") {
  Admission a({});
  a.made("i1", kAlice, false);
  a.made("i2", kAlice, true);
  a.made("i3", kGatewayA, false);
  CHECK(a.may_use("i1", kAlice));
  CHECK_FALSE(a.may_use("i1", kBob));
  CHECK(a.may_use("i2", kBob));       // shared
  CHECK(a.may_use("i3", kGatewayB));  // the gateway's clients count as one
  CHECK_FALSE(a.may_use("i3", kAlice));
  CHECK(a.may_use("unknown", kBob));  // nobody owns it: the routing table answers for it
  REQUIRE(a.owner("i1"));
  CHECK(a.owner("i1")->client == kAlice);
  CHECK_FALSE(a.owner("i1")->shared);
  CHECK(a.instances_of(kAlice).size() == 2);
  a.forget("i1");
  CHECK_FALSE(a.owner("i1"));
  CHECK(a.may_use("i1", kBob));
  CHECK(a.holds(kAlice) == 1);
  a.forget("i1");  // twice: nothing more happens
  CHECK(a.holds(kAlice) == 1);
}

TEST_CASE("a client's instances are bounded by --max-instances-per-client") {
  Admission a({2, 0});
  CHECK(a.may_make(kAlice));
  a.made("i1", kAlice, false);
  a.made("i2", kAlice, false);
  CHECK_FALSE(a.may_make(kAlice));
  CHECK(a.may_make(kBob));
  a.forget("i2");
  CHECK(a.may_make(kAlice));
  CHECK(a.holds(kBob) == 0);
  Admission unlimited({});
  for (int i = 0; i < 100; ++i) unlimited.made("i" + std::to_string(i), kAlice, false);
  CHECK(unlimited.may_make(kAlice));
}

TEST_CASE("a client's requests in flight are bounded by --max-inflight-per-client") {
  Admission a({0, 2});
  std::size_t c1 = 0, c2 = 0, c3 = 7;
  CHECK(a.begin(kAlice, c1));
  CHECK(a.begin(kAlice, c2));
  CHECK_FALSE(a.begin(kAlice, c3));  // at the limit: nothing counted
  CHECK(c3 == 0);
  CHECK(a.in_flight(kAlice) == 2);
  std::size_t other = 0;
  CHECK(a.begin(kBob, other));  // per client
  a.settle(kAlice, c1);
  CHECK(a.in_flight(kAlice) == 1);
  CHECK(a.begin(kAlice, c3));
  a.settle(kAlice, c2);
  a.settle(kAlice, c3);
  a.settle(kAlice, 1);  // more than it has: stays at zero
  CHECK(a.in_flight(kAlice) == 0);
  Admission unlimited({});
  std::size_t n = 9;
  CHECK(unlimited.begin(kAlice, n));
  CHECK(n == 0);  // nothing to settle
  CHECK(unlimited.in_flight(kAlice) == 0);
}
