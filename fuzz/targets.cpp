#include "fuzz/targets.hpp"

#include <string>
#include <string_view>

#include "frontends/access.hpp"
#include "frontends/pyjson.hpp"
#include "protocol/codec.hpp"
#include "protocol/space.hpp"

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

}  // namespace gymfarm::fuzz
