// Python-exact JSON: repr() floats, json.dumps separators and escaping, repr()/str() of JSON.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "frontends/gymie.hpp"
#include "frontends/pyjson.hpp"

using namespace gymfarm;
using frontends::Json;
using frontends::py_float;

TEST_CASE("floats are written as Python's repr writes them") {
  CHECK(py_float(1.0) == "1.0");
  CHECK(py_float(-0.0) == "-0.0");
  CHECK(py_float(0.1) == "0.1");
  CHECK(py_float(4.800000190734863) == "4.800000190734863");
  CHECK(py_float(static_cast<float>(4.8)) == "4.800000190734863");  // float32 widened
  CHECK(py_float(1e100) == "1e+100");
  CHECK(py_float(1e16) == "1e+16");
  CHECK(py_float(1e15) == "1000000000000000.0");
  CHECK(py_float(123456789012345678.0) == "1.2345678901234568e+17");
  CHECK(py_float(0.0001) == "0.0001");
  CHECK(py_float(0.00001) == "1e-05");
  CHECK(py_float(1.5e-7) == "1.5e-07");
  CHECK(py_float(3.4028234663852886e+38) == "3.4028234663852886e+38");
  CHECK(py_float(std::numeric_limits<double>::max()) == "1.7976931348623157e+308");
  CHECK(py_float(std::numeric_limits<double>::infinity()) == "Infinity");
  CHECK(py_float(-std::numeric_limits<double>::infinity()) == "-Infinity");
  CHECK(py_float(std::nan("")) == "NaN");
  CHECK(py_float(123.456) == "123.456");
  CHECK(py_float(-2.5) == "-2.5");
}

TEST_CASE("values are written as json.dumps writes them") {
  protocol::Value v(protocol::Map{{"a", 1}, {"b", 1.0}, {"c", protocol::Array{true, nullptr, "é\n\"x\""}}});
  CHECK(frontends::to_json(v) == R"({"a": 1, "b": 1.0, "c": [true, null, "\u00e9\n\"x\""]})");
  protocol::Tensor t = protocol::Tensor::from<float>(protocol::DType::Float32, {1.0f, -0.5f, 0.1f, 2.0f}, {2, 2});
  CHECK(frontends::to_json(protocol::Value(t)) == "[[1.0, -0.5], [0.10000000149011612, 2.0]]");
  protocol::Tensor i = protocol::Tensor::from<int64_t>(protocol::DType::Int64, {3}, {});
  CHECK(frontends::to_json(protocol::Value(i)) == "3");
  protocol::Tensor b = protocol::Tensor::from<uint8_t>(protocol::DType::Bool, {1, 0}, {2});
  CHECK(frontends::to_json(protocol::Value(b)) == "[true, false]");
  CHECK(frontends::to_json(protocol::Value(std::string("\xF0\x9F\x98\x80"))) == R"("\ud83d\ude00")");
}

TEST_CASE("JSON ints stay ints, floats stay floats") {
  CHECK(frontends::from_json(Json::parse("1")).is_int());
  CHECK(frontends::from_json(Json::parse("1.0")).is_float());
  auto m = frontends::from_json(Json::parse(R"({"z": 1, "a": [2.5]})"));
  REQUIRE(m.is_map());
  CHECK(m.as_map()[0].first == "z");  // key order kept
}

TEST_CASE("repr and str of parsed JSON, as Python prints them") {
  CHECK(frontends::py_repr(Json::parse(R"({"instance_id": "x", "foo": 1})")) == "{'instance_id': 'x', 'foo': 1}");
  CHECK(frontends::py_repr(Json::parse("null")) == "None");
  CHECK(frontends::py_repr(Json::parse("[true, 1.0, 1e100]")) == "[True, 1.0, 1e+100]");
  CHECK(frontends::py_repr(Json::parse(R"("it's")")) == "\"it's\"");
  CHECK(frontends::py_repr(Json::parse(R"("a'b\"c")")) == "'a\\'b\"c'");
  CHECK(frontends::py_str(Json::parse(R"("invalid_action")")) == "invalid_action");
  CHECK(frontends::py_str(Json::parse("[1, 0]")) == "[1, 0]");
}

TEST_CASE("nesting depth and UTF-8 truncation") {
  CHECK(frontends::json_depth(R"({"a": [[1]], "s": "[[[[["})") == 3);
  CHECK(frontends::truncate_utf8("ab", 5) == "ab");
  const std::string e = "\xC3\xA9\xC3\xA9";  // éé
  CHECK(frontends::truncate_utf8(e, 3) == "\xC3\xA9");
}

TEST_CASE("Gymie space info") {
  protocol::Tensor lo = protocol::Tensor::from<float>(protocol::DType::Float32,
                                                      {-std::numeric_limits<float>::infinity(), 0.f}, {2});
  protocol::Tensor hi = protocol::Tensor::from<float>(protocol::DType::Float32,
                                                      {std::numeric_limits<float>::infinity(), 1.f}, {2});
  protocol::Value box(
      protocol::Map{{"type", "Box"}, {"dtype", "float32"}, {"shape", protocol::Array{2}}, {"low", lo}, {"high", hi}});
  CHECK(
      frontends::gymie_space_info(box, false) ==
      R"({"name": "Box", "shape": [2], "low": [-3.4028234663852886e+38, 0.0], "high": [3.4028234663852886e+38, 1.0]})");
  CHECK(frontends::gymie_space_info(box, true) ==
        R"({"name": "Box", "shape": [2], "low": [-Infinity, 0.0], "high": [Infinity, 1.0]})");
  CHECK(frontends::gymie_space_info(protocol::Value(protocol::Map{{"type", "Tuple"}}), false) ==
        R"({"name": "Tuple"})");
}
