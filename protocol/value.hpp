#pragma once
// Dynamic values that travel in message bodies: the MessagePack data model plus ndarrays.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "protocol/tensor.hpp"

namespace gymfarm::protocol {

class Value;
using Array = std::vector<Value>;
using Map = std::vector<std::pair<std::string, Value>>;  // keeps insertion order

struct Binary {
  std::string bytes;
  bool operator==(const Binary&) const = default;
};

class Value {
 public:
  using Storage =
      std::variant<std::monostate, bool, int64_t, uint64_t, double, std::string, Binary, Array, Map, Tensor>;

  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : v_(b) {}
  Value(int i) : v_(int64_t{i}) {}
  Value(int64_t i) : v_(i) {}
  Value(uint64_t u);
  Value(double d) : v_(d) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(Binary b) : v_(std::move(b)) {}
  Value(Array a) : v_(std::move(a)) {}
  Value(Map m) : v_(std::move(m)) {}
  Value(Tensor t) : v_(std::move(t)) {}

  bool is_nil() const { return std::holds_alternative<std::monostate>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_int() const { return std::holds_alternative<int64_t>(v_) || std::holds_alternative<uint64_t>(v_); }
  bool is_float() const { return std::holds_alternative<double>(v_); }
  bool is_number() const { return is_int() || is_float(); }
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  bool is_binary() const { return std::holds_alternative<Binary>(v_); }
  bool is_array() const { return std::holds_alternative<Array>(v_); }
  bool is_map() const { return std::holds_alternative<Map>(v_); }
  bool is_tensor() const { return std::holds_alternative<Tensor>(v_); }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const;    // int64 or a uint64 that fits; throws std::bad_variant_access otherwise
  double as_double() const;  // any number
  const std::string& as_string() const { return std::get<std::string>(v_); }
  const Binary& as_binary() const { return std::get<Binary>(v_); }
  const Array& as_array() const { return std::get<Array>(v_); }
  Array& as_array() { return std::get<Array>(v_); }
  const Map& as_map() const { return std::get<Map>(v_); }
  Map& as_map() { return std::get<Map>(v_); }
  const Tensor& as_tensor() const { return std::get<Tensor>(v_); }

  // Map lookup: nullptr when this is not a map or the key is absent.
  const Value* find(std::string_view key) const;
  // Map insert-or-replace; turns a nil value into an empty map first.
  Value& set(std::string key, Value v);

  const Storage& storage() const { return v_; }
  bool operator==(const Value& o) const { return v_ == o.v_; }

 private:
  Storage v_;
};

}  // namespace gymfarm::protocol
