#include "protocol/frames.hpp"

namespace gymfarm::protocol {

bool is_instance_verb(std::string_view v) {
  return v == verb::kReset || v == verb::kStep || v == verb::kClose || v == verb::kSpaces || v == verb::kSample ||
         v == verb::kRender || v == verb::kCall || v == verb::kGetAttr || v == verb::kSetAttr || v == verb::kSpilled;
}

std::string encode_rid(uint64_t rid) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((rid >> (8 * i)) & 0xff);
  return s;
}

std::optional<uint64_t> decode_rid(std::string_view bytes) {
  if (bytes.size() != 8) return std::nullopt;
  uint64_t rid = 0;
  for (int i = 0; i < 8; ++i) rid |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  return rid;
}

bool is_valid_instance_id(std::string_view id) {
  if (id.size() != 32) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace gymfarm::protocol
