#pragma once
// Helpers of the worker tests: request bodies and decoded replies.
#include <catch2/catch.hpp>

#include <string>
#include <string_view>

#include "protocol/codec.hpp"
#include "protocol/frames.hpp"
#include "worker/host.hpp"

namespace gymfarm::worker::test {

// The names the worker tests use, brought in by their `using namespace gymfarm::worker::test`.
namespace py = pybind11;
namespace protocol = gymfarm::protocol;
namespace verb = gymfarm::protocol::verb;
using gymfarm::worker::Args;
using gymfarm::worker::Host;
using gymfarm::worker::Reply;

inline std::string body(protocol::Map m) { return protocol::encode(protocol::Value(std::move(m))); }

// A reply body decoded with the protocol's own codec (what the broker and clients read).
inline protocol::Value decoded(std::string_view bytes) {
  protocol::Value v;
  std::string err;
  INFO("decode: " << err);
  REQUIRE(protocol::decode(bytes, v, err));
  REQUIRE(v.is_map());
  return v;
}

inline const protocol::Value& field(const protocol::Value& m, std::string_view key) {
  const protocol::Value* v = m.find(key);
  INFO("field " << key);
  REQUIRE(v != nullptr);
  return *v;
}

// The code of an error reply (status err, a {code, message, details} body).
inline std::string error_code(const Reply& r) {
  REQUIRE(r.status == protocol::kStatusErr);
  const protocol::Value e = decoded(r.body);
  REQUIRE(field(e, "message").is_string());
  REQUIRE(field(e, "details").is_map());
  return field(e, "code").as_string();
}

inline std::string make_body(const char* env_id) { return body({{"env_id", protocol::Value(env_id)}}); }

}  // namespace gymfarm::worker::test
