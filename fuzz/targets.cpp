#include "fuzz/targets.hpp"

#include <limits>
#include <string>
#include <string_view>

#include "client/client.hpp"
#include "frontends/access.hpp"
#include "frontends/pyjson.hpp"
#include "frontends/rest.hpp"
#include "protocol/codec.hpp"
#include "protocol/space.hpp"
#include "transport/stream.hpp"

#include <sys/socket.h>
#include <unistd.h>

namespace gymfarm::fuzz {

void codec(const uint8_t* data, std::size_t size) {
  protocol::Value v;
  std::string err;
  if (!protocol::decode(std::string_view(reinterpret_cast<const char*>(data), size), v, err)) return;
  const std::string again = protocol::encode(v);
  protocol::Value back;
  if (!protocol::decode(again, back, err) || !(back == v)) {
    // NaN payloads compare unequal; anything else is a codec bug
    if (frontends::to_json(back) != frontends::to_json(v)) __builtin_trap();
  }
  auto space = protocol::Space::from_value(v, err);
  if (space) space->contains(v);
}

void gymie_json(const uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (frontends::json_depth(text) > 64) return;
  auto j = frontends::Json::parse(text, nullptr, false);
  if (j.is_discarded()) return;
  (void)frontends::py_repr(j);
  (void)frontends::py_str(j);
  (void)frontends::truncate_utf8(frontends::to_json(frontends::from_json(j)), 123);
}

void access(const uint8_t* data, std::size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  // split the input into four header values at NUL bytes
  std::string parts[4];
  std::size_t k = 0;
  for (char c : s) {
    if (c == '\0' && k < 3) ++k;
    else parts[k] += c;
  }
  frontends::AccessPolicy open, locked;
  locked.token = "0123456789abcdef0123456789abcdef";
  (void)frontends::check_access(open, parts[0], parts[1], parts[2], parts[3]);
  (void)frontends::check_access(locked, parts[0], parts[1], parts[2], parts[3]);
  auto decoded = frontends::base64_decode(parts[2]);
  if (decoded && frontends::base64_decode(frontends::base64_encode(*decoded)) != decoded) __builtin_trap();
}

namespace {

// Answers like a farm serving CartPole (Box(4) observations, Discrete(2) actions, 2x2 RGB frames),
// or with the error code the input chose.
class ScriptedFarm final : public client::Caller {
 public:
  explicit ScriptedFarm(int fail) : fail_(fail) {}
  int fail_;  // 0: answer; k: throw the (k-1)th error code

  protocol::Value call(std::string_view verb, std::string_view, const protocol::Value&) override {
    using protocol::Map;
    using protocol::Value;
    if (fail_ > 0) {
      const auto code = static_cast<protocol::ErrorCode>((fail_ - 1) %
                                                         (static_cast<int>(protocol::ErrorCode::Internal) + 1));
      throw client::ClientError(protocol::Error{code, "scripted failure", Value(Map{})});
    }
    const Value obs(protocol::Tensor::from<float>(protocol::DType::Float32, {0.5f, -1.0f, 0.0f, 2.5f}, {4}));
    if (verb == "make") {
      return Value(Map{{"instance_id", std::string(32, 'a')}, {"spec", Value(Map{{"id", "CartPole-v1"}})}});
    }
    if (verb == "reset") return Value(Map{{"obs", obs}, {"info", Value(Map{})}});
    if (verb == "step") {
      return Value(
          Map{{"obs", obs}, {"reward", 1.0}, {"terminated", true}, {"truncated", false}, {"info", Value(Map{})}});
    }
    if (verb == "spaces") {
      protocol::Space box;
      box.kind = protocol::Space::Kind::Box;
      box.shape = {4};
      constexpr float big = std::numeric_limits<float>::max();  // CartPole's unbounded velocities
      box.low = protocol::Tensor::from<float>(protocol::DType::Float32, {-4.8f, -big, -0.4f, -big}, {4});
      box.high = protocol::Tensor::from<float>(protocol::DType::Float32, {4.8f, big, 0.4f, big}, {4});
      protocol::Space discrete;
      discrete.kind = protocol::Space::Kind::Discrete;
      discrete.n = 2;
      return Value(Map{{"observation_space", box.to_value()}, {"action_space", discrete.to_value()}});
    }
    if (verb == "sample") return Value(Map{{"value", int64_t{1}}});
    if (verb == "render") {
      return Value(Map{{"frame", Value(protocol::Tensor{protocol::DType::UInt8, {2, 2, 3}, std::string(12, '\x7f')})}});
    }
    return Value(Map{});
  }
};

}  // namespace

void rest(const uint8_t* data, std::size_t size) {
  if (size == 0) return;
  const uint8_t flags = data[0];
  std::string parts[4];
  std::size_t k = 0;
  for (std::size_t i = 1; i < size; ++i) {
    const char c = static_cast<char>(data[i]);
    if (c == '\0' && k < 3) ++k;
    else parts[k] += c;
  }
  const auto dialect = flags & 1 ? frontends::RestDialect::GymnasiumHttpApi : frontends::RestDialect::GymHttpApi;
  ScriptedFarm farm(0);
  frontends::RestRegistry registry;
  frontends::RestOptions options;  // no monitor directory, no shutdown: nothing touches the disk
  frontends::RestSession session(farm, registry, dialect, options);
  const auto made = session.handle({"POST", "/v1/envs/", R"({"env_id": "CartPole-v1"})", "application/json"});
  std::string id = "00000000";
  if (auto j = frontends::Json::parse(made.body, nullptr, false); j.is_object() && j.contains("instance_id")) {
    id = j["instance_id"].get<std::string>();
  }
  std::string target;
  for (char c : parts[1]) target += c == '@' ? id : std::string(1, c);
  farm.fail_ = (flags >> 1) & 0x1f;
  // handle() turns every error into a status; an exception escaping it is a bug the fuzzer reports
  const auto reply = session.handle({parts[0], target, parts[2], parts[3]});
  if (reply.status < 100 || reply.status > 599) __builtin_trap();
}

void stream(const uint8_t* data, std::size_t size) {
  if (size == 0) return;
  constexpr long long kMax = 1 << 20;
  const std::size_t chunk = 1 + data[0] * 37;  // 1..9436 bytes per write
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) return;
  transport::StreamConn reader(sv[0], kMax);
  transport::Frames m;
  bool done = false;
  auto drain = [&] {
    while (!done) {
      const auto r = reader.next(m);
      if (r == transport::StreamConn::Read::Nothing) return;
      if (r != transport::StreamConn::Read::Message) {
        done = true;
        return;
      }
      std::size_t bytes = 0;
      for (const auto& f : m) bytes += f.size();
      if (m.empty() || static_cast<long long>(bytes) > kMax) __builtin_trap();
    }
  };
  for (std::size_t at = 1; at < size && !done;) {
    const ssize_t n = ::write(sv[1], data + at, std::min(chunk, size - at));
    if (n > 0) at += static_cast<std::size_t>(n);
    drain();
  }
  ::close(sv[1]);
  drain();
  drain();
}

}  // namespace gymfarm::fuzz
