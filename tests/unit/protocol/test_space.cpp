// Spaces: round trips through the wire form for every kind, validation and contains().
#include <catch2/catch.hpp>
#include <limits>

#include "protocol/codec.hpp"
#include "protocol/space.hpp"

using namespace gymfarm::protocol;

namespace {
Space box(const std::vector<float>& low, const std::vector<float>& high) {
  Space s;
  s.kind = Space::Kind::Box;
  s.dtype = DType::Float32;
  s.shape = {low.size()};
  s.low = Tensor::from<float>(DType::Float32, low, {low.size()});
  s.high = Tensor::from<float>(DType::Float32, high, {high.size()});
  return s;
}
Space discrete(int64_t n, int64_t start = 0) {
  Space s;
  s.kind = Space::Kind::Discrete;
  s.n = n;
  s.start = start;
  return s;
}
Space wire_round_trip(const Space& s) {
  Value v;
  std::string err;
  REQUIRE(decode(encode(s.to_value()), v, err));
  auto back = Space::from_value(v, err);
  REQUIRE(back);
  return *back;
}
}  // namespace

TEST_CASE("every space kind round-trips") {
  const float inf = std::numeric_limits<float>::infinity();
  Space md;
  md.kind = Space::Kind::MultiDiscrete;
  md.dtype = DType::Int64;
  md.nvec = Tensor::from<int64_t>(DType::Int64, {2, 7}, {2});
  md.mstart = Tensor::from<int64_t>(DType::Int64, {-1, 0}, {2});
  md.shape = {2};
  Space mb;
  mb.kind = Space::Kind::MultiBinary;
  mb.binary_shape = {2, 3};
  mb.shape = {2, 3};
  Space text;
  text.kind = Space::Kind::Text;
  text.min_length = 1;
  text.max_length = 8;
  text.charset = "abc";
  Space tuple;
  tuple.kind = Space::Kind::Tuple;
  tuple.spaces = {discrete(32), discrete(11), discrete(2)};
  Space dict;
  dict.kind = Space::Kind::Dict;
  dict.keys = {"pos", "mode"};
  dict.spaces = {box({-inf, -1.f}, {inf, 1.f}), discrete(3, 1)};
  for (const Space& s : {box({-inf, -2.5f}, {inf, 2.5f}), discrete(4, 2), md, mb, text, tuple, dict}) {
    CHECK(wire_round_trip(s) == s);
  }
}

TEST_CASE("malformed space descriptions are refused with a reason") {
  std::string err;
  CHECK_FALSE(Space::from_value(Value(Map{{"type", "Sphere"}}), err));
  CHECK(err.find("Sphere") != std::string::npos);
  CHECK_FALSE(Space::from_value(Value(Map{{"type", "Discrete"}, {"n", "four"}}), err));
  Value v = box({0.f}, {1.f}).to_value();
  v.set("shape", Array{2});
  CHECK_FALSE(Space::from_value(v, err));
  CHECK_FALSE(Space::from_value(Value(42), err));
}

TEST_CASE("contains checks bounds, ranges and structure") {
  Space b = box({-1.f, 0.f}, {1.f, 2.f});
  CHECK(b.contains(Value(Tensor::from<float>(DType::Float32, {0.5f, 2.0f}, {2}))));
  CHECK_FALSE(b.contains(Value(Tensor::from<float>(DType::Float32, {0.5f, 2.5f}, {2}))));
  CHECK_FALSE(b.contains(Value(Tensor::from<float>(DType::Float32, {0.5f}, {1}))));
  Space d = discrete(3, 1);
  CHECK(d.contains(Value(1)));
  CHECK(d.contains(Value(3)));
  CHECK_FALSE(d.contains(Value(0)));
  CHECK_FALSE(d.contains(Value(1.0)));
  CHECK(d.contains(Value(Tensor::from<int64_t>(DType::Int64, {2}, {}))));
  Space t;
  t.kind = Space::Kind::Tuple;
  t.spaces = {d, b};
  CHECK(t.contains(Value(Array{2, Value(Tensor::from<float>(DType::Float32, {0.f, 0.f}, {2}))})));
  CHECK_FALSE(t.contains(Value(Array{2})));
}

TEST_CASE("Sequence, Graph and OneOf round-trip and check their values") {
  Space seq;
  seq.kind = Space::Kind::Sequence;
  seq.spaces = {discrete(3)};
  Space stacked = seq;
  stacked.stack = true;
  Space graph;
  graph.kind = Space::Kind::Graph;
  graph.spaces = {box({-1.f, -1.f}, {1.f, 1.f}), discrete(4)};
  Space nodes_only;
  nodes_only.kind = Space::Kind::Graph;
  nodes_only.spaces = {discrete(5)};
  Space one_of;
  one_of.kind = Space::Kind::OneOf;
  one_of.spaces = {discrete(2), box({0.f}, {1.f})};
  for (const Space& s : {seq, stacked, graph, nodes_only, one_of}) {
    CHECK(wire_round_trip(s) == s);
  }
  CHECK(wire_round_trip(nodes_only).spaces.size() == 1);
  CHECK(seq.contains(Value(Array{0, 2, 1})));
  CHECK(seq.contains(Value(Array{})));
  CHECK_FALSE(seq.contains(Value(Array{0, 3})));
  CHECK(one_of.contains(Value(Array{1, Value(Tensor::from<float>(DType::Float32, {0.5f}, {1}))})));
  CHECK_FALSE(one_of.contains(Value(Array{0, 2})));
  CHECK_FALSE(one_of.contains(Value(Array{2, 0})));
  CHECK(graph.contains(Value(Array{Value(Tensor::from<float>(DType::Float32, {0.f, 0.f}, {1, 2})), Value(), Value()})));
  CHECK_FALSE(graph.contains(Value(Array{1, 2})));
  std::string err;
  CHECK_FALSE(Space::from_value(Value(Map{{"type", "OneOf"}, {"spaces", Array{}}}), err));
  CHECK_FALSE(Space::from_value(Value(Map{{"type", "Sequence"}}), err));
  CHECK(err.find("space") != std::string::npos);
}
