// Ownership and the per-client limits, with client keys as the broker makes them (sessions.hpp).
#include <catch2/catch.hpp>

#include "broker/admission.hpp"
#include "broker/sessions.hpp"

using namespace gymfarm::broker;

namespace {
// Functions, not static strings: client_key allocates, and a static's initializer must not throw.
std::string alice() { return client_key(ClientPath::Tcp, "alice", "0000000000000001"); }
std::string bob() { return client_key(ClientPath::Tcp, "bob", "0000000000000002"); }
std::string gateway_a() { return client_key(ClientPath::Inproc, "ws-1"); }
std::string gateway_b() { return client_key(ClientPath::Inproc, "rest-2"); }
}  // namespace

TEST_CASE("only the maker uses an instance, unless it was made shared; the gateway is one client") {
  Admission a({});
  a.made("i1", alice(), false);
  a.made("i2", alice(), true);
  a.made("i3", gateway_a(), false);
  CHECK(a.may_use("i1", alice()));
  CHECK_FALSE(a.may_use("i1", bob()));
  CHECK(a.may_use("i2", bob()));        // shared
  CHECK(a.may_use("i3", gateway_b()));  // the gateway's clients count as one
  CHECK_FALSE(a.may_use("i3", alice()));
  CHECK(a.may_use("unknown", bob()));  // nobody owns it: the routing table answers for it
  REQUIRE(a.owner("i1"));
  CHECK(a.owner("i1")->client == alice());
  CHECK_FALSE(a.owner("i1")->shared);
  CHECK(a.instances_of(alice()).size() == 2);
  a.forget("i1");
  CHECK_FALSE(a.owner("i1"));
  CHECK(a.may_use("i1", bob()));
  CHECK(a.holds(alice()) == 1);
  a.forget("i1");  // twice: nothing more happens
  CHECK(a.holds(alice()) == 1);
}

TEST_CASE("a client's instances are bounded by --max-instances-per-client") {
  Admission a({2, 0});
  CHECK(a.may_make(alice()));
  a.made("i1", alice(), false);
  a.made("i2", alice(), false);
  CHECK_FALSE(a.may_make(alice()));
  CHECK(a.may_make(bob()));
  a.forget("i2");
  CHECK(a.may_make(alice()));
  CHECK(a.holds(bob()) == 0);
  Admission unlimited({});
  for (int i = 0; i < 100; ++i) unlimited.made("i" + std::to_string(i), alice(), false);
  CHECK(unlimited.may_make(alice()));
}

TEST_CASE("a client's requests in flight are bounded by --max-inflight-per-client") {
  Admission a({0, 2});
  std::size_t c1 = 0, c2 = 0, c3 = 7;
  CHECK(a.begin(alice(), c1));
  CHECK(a.begin(alice(), c2));
  CHECK_FALSE(a.begin(alice(), c3));  // at the limit: nothing counted
  CHECK(c3 == 0);
  CHECK(a.in_flight(alice()) == 2);
  std::size_t other = 0;
  CHECK(a.begin(bob(), other));  // per client
  a.settle(alice(), c1);
  CHECK(a.in_flight(alice()) == 1);
  CHECK(a.begin(alice(), c3));
  a.settle(alice(), c2);
  a.settle(alice(), c3);
  a.settle(alice(), 1);  // more than it has: stays at zero
  CHECK(a.in_flight(alice()) == 0);
  Admission unlimited({});
  std::size_t n = 9;
  CHECK(unlimited.begin(alice(), n));
  CHECK(n == 0);  // nothing to settle
  CHECK(unlimited.in_flight(alice()) == 0);
}
