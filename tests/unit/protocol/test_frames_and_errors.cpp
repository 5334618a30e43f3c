#include <catch2/catch.hpp>

#include "protocol/error.hpp"
#include "protocol/frames.hpp"
#include "protocol/token.hpp"

using namespace gymfarm::protocol;

TEST_CASE("request ids are 8 little-endian bytes") {
  const std::string b = encode_rid(0x0102030405060708ull);
  REQUIRE(b.size() == 8);
  CHECK(b[0] == 0x08);
  CHECK(decode_rid(b) == 0x0102030405060708ull);
  CHECK_FALSE(decode_rid("short"));
}

TEST_CASE("instance ids are 32 lowercase hex digits") {
  CHECK(is_valid_instance_id("0123456789abcdef0123456789abcdef"));
  CHECK_FALSE(is_valid_instance_id("0123456789ABCDEF0123456789abcdef"));
  CHECK_FALSE(is_valid_instance_id("abc"));
}

TEST_CASE("error codes have stable names and survive the wire form") {
  for (auto c : {ErrorCode::BadRequest, ErrorCode::UnknownInstance, ErrorCode::BadAction, ErrorCode::EnvError,
                 ErrorCode::WorkerCrashed, ErrorCode::Timeout, ErrorCode::CapacityExhausted, ErrorCode::Overloaded,
                 ErrorCode::ShuttingDown, ErrorCode::Unauthorized, ErrorCode::ResourceLimit, ErrorCode::Internal}) {
    CHECK(error_code_from_string(to_string(c)) == c);
  }
  CHECK(to_string(ErrorCode::WorkerCrashed) == "worker_crashed");
  Error e{ErrorCode::WorkerCrashed, "worker 1 died", Value(Map{{"signal", 9}})};
  Error back = Error::from_value(e.to_value());
  CHECK(back.code == ErrorCode::WorkerCrashed);
  CHECK(back.message == "worker 1 died");
  CHECK(back.details.find("signal")->as_int() == 9);
  Error unknown = Error::from_value(Value(Map{{"code", "martian"}, {"message", "?"}}));
  CHECK(unknown.code == ErrorCode::Internal);
  CHECK(unknown.details.find("code")->as_string() == "martian");
}

TEST_CASE("hex for the zygote's line protocol round-trips any bytes and refuses what is not hex") {
  const std::string bytes("a\0 \n\xff-v1", 8);
  REQUIRE(gymfarm::protocol::to_hex(bytes) ==
          "610020"
          "0aff2d7631");
  REQUIRE(gymfarm::protocol::from_hex(gymfarm::protocol::to_hex(bytes)) == bytes);
  REQUIRE(gymfarm::protocol::from_hex("0A0b") == std::string("\n\x0b"));
  REQUIRE(gymfarm::protocol::from_hex("") == std::string());
  REQUIRE_FALSE(gymfarm::protocol::from_hex("abc").has_value());
  REQUIRE_FALSE(gymfarm::protocol::from_hex("zz").has_value());
  REQUIRE_FALSE(gymfarm::protocol::from_hex("6 ").has_value());
}
