// The kinds a request comes in, and which instances each concerns (idle and touch bookkeeping).
#include <catch2/catch.hpp>

#include "broker/request.hpp"

using namespace gymfarm::broker;

TEST_CASE("a request is one kind at a time, plain by default") {
  Request r;
  CHECK(r.as<Request::Plain>());
  CHECK_FALSE(r.as<Request::Make>());
  r.kind = Request::Make{true};
  REQUIRE(r.as<Request::Make>());
  CHECK(r.as<Request::Make>()->shared);
  CHECK_FALSE(r.as<Request::Plain>());
  r.kind = Request::BatchPart{7, 3};
  CHECK(r.as<Request::BatchPart>()->batch == 7);
  CHECK(r.as<Request::BatchPart>()->index == 3);
  CHECK_FALSE(r.as<Request::Make>());  // no flag of another kind is left behind
}

TEST_CASE("a request concerns its own instance and its parts' instances") {
  Request plain;
  plain.instance = "a";
  CHECK(plain.concerns("a"));
  CHECK_FALSE(plain.concerns("b"));
  CHECK_FALSE(plain.concerns(""));

  Request many;
  many.kind = Request::StepMany{1, {{"b", "", 0}, {"c", "", 2}}};
  CHECK(many.concerns("b"));
  CHECK(many.concerns("c"));
  CHECK_FALSE(many.concerns("a"));

  Request share;
  share.kind = Request::VecShare{2, {"d", "e"}, {0, 1}};
  CHECK(share.concerns("e"));
  CHECK_FALSE(share.concerns("b"));
}
