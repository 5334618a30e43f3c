// Codec round trips for every value kind and every dtype, and refusal of malformed input.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "protocol/codec.hpp"

using namespace gymfarm::protocol;

namespace {
Value round_trip(const Value& v) {
  Value out;
  std::string err;
  REQUIRE(decode(encode(v), out, err));
  return out;
}
}  // namespace

TEST_CASE("scalars, strings, binaries and containers round-trip") {
  Map m{{"b", true},     {"i", int64_t{-42}}, {"u", uint64_t{18446744073709551615ull}},
        {"f", 1.5},      {"s", "héllo"},      {"bin", Binary{std::string("\0\1\2", 3)}},
        {"nil", Value()}};
  Value v(Map{{"array", Array{1, "two", 3.0, Array{}}}, {"map", Value(m)}});
  CHECK(round_trip(v) == v);
}

TEST_CASE("floats stay floats even when integral, and keep inf and nan") {
  for (double d :
       {1.0, 0.0, -3.0, 1e300, std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
    const std::string bytes = encode(Value(d));
    REQUIRE(bytes.size() == 9);
    CHECK(static_cast<unsigned char>(bytes[0]) == 0xcb);
    Value out = round_trip(Value(d));
    REQUIRE(out.is_float());
    CHECK(out.as_double() == d);
  }
  Value nan = round_trip(Value(std::nan("")));
  REQUIRE(nan.is_float());
  CHECK(std::isnan(nan.as_double()));
}

TEST_CASE("ndarrays of every dtype round-trip with shape and bytes") {
  for (DType d : {DType::Bool, DType::Int8, DType::Int16, DType::Int32, DType::Int64, DType::UInt8, DType::UInt16,
                  DType::UInt32, DType::UInt64, DType::Float16, DType::Float32, DType::Float64}) {
    Tensor t;
    t.dtype = d;
    t.shape = {2, 3};
    t.data.resize(6 * dtype_size(d));
    for (std::size_t i = 0; i < t.data.size(); ++i) t.data[i] = static_cast<char>(i * 7 + 1);
    Value out = round_trip(Value(t));
    REQUIRE(out.is_tensor());
    CHECK(out.as_tensor() == t);
    CHECK(dtype_from_str(dtype_str(d)) == d);
    CHECK(dtype_from_name(dtype_name(d)) == d);
  }
}

TEST_CASE("a 0-d ndarray is a numpy scalar") {
  Tensor t = Tensor::from<int64_t>(DType::Int64, {7}, {});
  Value out = round_trip(Value(t));
  CHECK(out.as_tensor().shape.empty());
  CHECK(out.as_tensor().at<int64_t>(0) == 7);
}

TEST_CASE("the ndarray payload is the documented [dtype, shape, data]") {
  Tensor t = Tensor::from<float>(DType::Float32, {1.0f, 2.0f}, {2});
  const std::string bytes = encode(Value(t));
  // ext8 header: 0xc7 len type=1
  REQUIRE(static_cast<unsigned char>(bytes[0]) == 0xc7);
  CHECK(bytes[2] == kNdarrayExt);
  Value payload;
  std::string err;
  REQUIRE(decode(std::string_view(bytes).substr(3), payload, err));
  REQUIRE(payload.is_array());
  CHECK(payload.as_array()[0].as_string() == "<f4");
  CHECK(payload.as_array()[1] == Value(Array{2}));
  CHECK(payload.as_array()[2].as_binary().bytes.size() == 8);
}

TEST_CASE("malformed input is reported, never thrown") {
  Value out;
  std::string err;
  CHECK_FALSE(decode(std::string("\x92\x01", 2), out, err));  // truncated array
  CHECK_FALSE(err.empty());
  CHECK_FALSE(decode(std::string("\x01\x02", 2), out, err));  // trailing bytes
  CHECK(err.find("trailing") != std::string::npos);
  CHECK_FALSE(decode(std::string("\xc1", 1), out, err));          // never-used byte
  CHECK_FALSE(decode(std::string("\x81\x01\x02", 3), out, err));  // non-string key
  // an ext of an unknown type, and an ndarray whose data does not match its shape
  CHECK_FALSE(decode(std::string("\xd4\x05\x00", 3), out, err));
  Tensor bad = Tensor::from<float>(DType::Float32, {1.0f}, {1});
  bad.shape = {3};
  CHECK_FALSE(decode(encode(Value(bad)), out, err));
  CHECK(err.find("shape") != std::string::npos);
}

TEST_CASE("nesting deeper than the limit is refused") {
  std::string deep(100, '\x91');
  deep += '\xc0';
  Value out;
  std::string err;
  CHECK_FALSE(decode(deep, out, err));
  DecodeLimits generous;
  generous.max_depth = 200;
  CHECK(decode(deep, out, err, generous));
}

TEST_CASE("an empty body is an empty map") {
  Value out;
  std::string err;
  REQUIRE(decode("", out, err));
  CHECK(out == Value(Map{}));
}
