#include "protocol/value.hpp"

#include <limits>

namespace gymfarm::protocol {

Value::Value(uint64_t u) {
  if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    v_ = static_cast<int64_t>(u);
  } else {
    v_ = u;
  }
}

int64_t Value::as_int() const {
  if (auto* i = std::get_if<int64_t>(&v_)) return *i;
  const uint64_t u = std::get<uint64_t>(v_);
  if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) throw std::bad_variant_access();
  return static_cast<int64_t>(u);
}

std::optional<int64_t> Value::get_int() const noexcept {
  if (const auto* i = std::get_if<int64_t>(&v_)) return *i;
  if (const auto* u = std::get_if<uint64_t>(&v_);
      u && *u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return static_cast<int64_t>(*u);
  }
  return std::nullopt;
}

double Value::as_double() const {
  if (auto* d = std::get_if<double>(&v_)) return *d;
  if (auto* i = std::get_if<int64_t>(&v_)) return static_cast<double>(*i);
  return static_cast<double>(std::get<uint64_t>(v_));
}

const Value* Value::find(std::string_view key) const {
  const auto* m = std::get_if<Map>(&v_);
  if (!m) return nullptr;
  for (const auto& [k, v] : *m) {
    if (k == key) return &v;
  }
  return nullptr;
}

Value& Value::set(std::string key, Value v) {
  if (is_nil()) v_ = Map{};
  auto& m = std::get<Map>(v_);
  for (auto& [k, old] : m) {
    if (k == key) {
      old = std::move(v);
      return old;
    }
  }
  m.emplace_back(std::move(key), std::move(v));
  return m.back().second;
}

}  // namespace gymfarm::protocol
