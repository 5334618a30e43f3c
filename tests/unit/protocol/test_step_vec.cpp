// A worker's share of a step_vec: what the broker encodes, and what the worker accepts from a slab.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "protocol/codec.hpp"
#include "protocol/step_vec.hpp"

using namespace gymfarm::protocol;

namespace {

Tensor actions(const std::vector<int64_t>& rows) {
  const auto n = static_cast<uint64_t>(rows.size());
  return Tensor::from(DType::Int64, rows, {n});
}

}  // namespace

TEST_CASE("step_vec share: what the broker encodes decodes to the same share") {
  const Value mode("same_step");
  const std::string body = encode_vec_share({"a", "b"}, actions({1, 0}), &mode);
  const auto share = decode_vec_share(body);
  REQUIRE(share);
  CHECK(share->instances == std::vector<std::string>{"a", "b"});
  CHECK(share->actions == actions({1, 0}));
  REQUIRE(share->autoreset);
  CHECK(share->autoreset->as_string() == "same_step");
  CHECK(encode_vec_share(share->instances, share->actions, &*share->autoreset) == body);
  CHECK_FALSE(decode_vec_share(encode_vec_share({"a"}, actions({1}), nullptr))->autoreset);
}

TEST_CASE("step_vec share: anything else is refused") {
  const auto enc = [](Map m) { return encode(Value(std::move(m))); };
  const Value names(Array{Value("a"), Value("b")});
  for (const std::string& body : {
           std::string("\xc1", 1),                                                 // not MessagePack
           encode(Value("a map it is not")),                                       // not a map
           enc({{"actions", Value(actions({0, 0}))}}),                             // no instances
           enc({{"instances", names}}),                                            // no actions
           enc({{"instances", Value(Array{})}, {"actions", Value(actions({}))}}),  // no envs
           enc({{"instances", Value(Array{Value("a"), Value(3)})}, {"actions", Value(actions({0, 0}))}}),
           enc({{"instances", names}, {"actions", Value(actions({0}))}}),               // a row short
           enc({{"instances", names}, {"actions", Value(Array{Value(0), Value(0)})}}),  // not an ndarray
       }) {
    CHECK_FALSE(decode_vec_share(body));
  }
}
