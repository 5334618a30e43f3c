// Integers beyond 64 bits: ext type 2 (docs/protocol.md "Values") round-trips, malformed digits are
// refused, and the gateway's JSON writes the number as a bare decimal integer.
#include <catch2/catch.hpp>

#include "frontends/pyjson.hpp"
#include "protocol/codec.hpp"

using namespace gymfarm::protocol;

namespace {
std::string ext2(std::string_view digits) {
  std::string out;
  out += static_cast<char>(0xc7);  // ext 8
  out += static_cast<char>(digits.size());
  out += static_cast<char>(kBigIntExt);
  out += digits;
  return out;
}
}  // namespace

TEST_CASE("a big integer round-trips as ext type 2 with its decimal digits") {
  const std::string two_200 = "1606938044258990275541962092341162602522202993782792835301376";
  for (const std::string& d : {two_200, "-" + two_200, std::string("0"), std::string("18446744073709551616")}) {
    const Value v(Map{{"seed", Value(BigInt{d})}});
    const std::string bytes = encode(v);
    REQUIRE(bytes.size() > d.size() + 1);  // ...ext header, type 2, then the digits themselves
    CHECK(bytes.substr(bytes.size() - d.size()) == d);
    CHECK(bytes[bytes.size() - d.size() - 1] == kBigIntExt);
    Value out;
    std::string err;
    REQUIRE(decode(bytes, out, err));
    REQUIRE(out.find("seed")->is_bigint());
    CHECK(out.find("seed")->as_bigint().digits == d);
    CHECK(out == v);
  }
}

TEST_CASE("malformed big-integer payloads are refused, not trusted") {
  for (std::string_view bad : {"", "-", "-0", "007", "12a3", "+5", " 1", "1e9", "--1"}) {
    Value out;
    std::string err;
    CHECK_FALSE(decode(ext2(bad), out, err));
    CHECK(err.find("big integer") != std::string::npos);
  }
  Value out;
  std::string err;
  CHECK_FALSE(decode(ext2("12345").substr(0, 6), out, err));  // truncated payload
  CHECK(valid_bigint_digits(std::string(kMaxBigIntDigits, '9')));
  CHECK_FALSE(valid_bigint_digits(std::string(kMaxBigIntDigits + 1, '9')));
}

TEST_CASE("the gateway's JSON shows a big integer as a decimal number") {
  const Value v(Map{{"value", Value(BigInt{"-340282366920938463463374607431768211456"})}});
  CHECK(gymfarm::frontends::to_json(v) == R"({"value": -340282366920938463463374607431768211456})");
}
