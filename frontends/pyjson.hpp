#pragma once
// JSON the way Python writes it: json.dumps separators and escaping, repr() floats, ints that stay
// ints, and repr()/str() of parsed JSON for the peers' error messages (docs/dialects.md).
#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "protocol/value.hpp"

namespace gymfarm::frontends {

// Objects keep their key order, as Python dicts do.
using Json = nlohmann::ordered_json;

struct JsonStyle {
  std::string_view item_sep = ", ";
  std::string_view key_sep = ": ";
  bool ensure_ascii = true;
  bool sort_keys = false;  // json.dumps(sort_keys=True), as Flask's jsonify writes
};

// Flask's jsonify: compact separators, sorted keys.
inline constexpr JsonStyle kFlaskStyle{",", ":", true, true};

// Python repr() of a float: shortest round-trip digits; fixed notation for 1e-4 <= |x| < 1e16
// (always with a fractional part), otherwise 1e+16 / 1.5e-05. NaN and ±inf as NaN / Infinity.
std::string py_float(double d);

// Writes a value as json.dumps would; ndarrays as ndarray.tolist() (float32 widened to double).
void write_json(std::string& out, const protocol::Value& v, const JsonStyle& style = {});
std::string to_json(const protocol::Value& v, const JsonStyle& style = {});
void write_json_string(std::string& out, std::string_view s, bool ensure_ascii = true);

// JSON -> Value: integers stay integers, floats stay floats.
protocol::Value from_json(const Json& j);

// Python's repr() and str() of the object json.loads would give.
std::string py_repr(const Json& j);
std::string py_str(const Json& j);

// Deepest nesting of arrays and objects in a JSON text (strings skipped), to refuse deep input
// before parsing it.
std::size_t json_depth(std::string_view text);

// Cuts s to at most max bytes without splitting a UTF-8 sequence.
std::string truncate_utf8(std::string s, std::size_t max);

}  // namespace gymfarm::frontends
