#include "frontends/pyjson.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace gymfarm::frontends {

using protocol::Value;

std::string py_float(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // e.g. "-1.2345e+02" (shortest round-trip digits)
  const auto e = sci.find('e');
  const int exp = std::stoi(sci.substr(e + 1));
  std::string mant = sci.substr(0, e);
  const bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant) {
    if (c != '.') digits += c;
  }
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out += "0." + std::string(static_cast<std::size_t>(-exp - 1), '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exp + 1) {
      out += digits + std::string(static_cast<std::size_t>(exp + 1 - static_cast<int>(digits.size())), '0') + ".0";
    } else {
      out += digits.substr(0, static_cast<std::size_t>(exp) + 1) + "." +
             digits.substr(static_cast<std::size_t>(exp) + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char ebuf[16];
  std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return out + ebuf;
}

void write_json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  static const char* hex = "0123456789abcdef";
  auto u16 = [&](unsigned v) {
    out += "\\u";
    for (int k = 3; k >= 0; --k) out += hex[(v >> (4 * k)) & 0xf];
  };
  out += '"';
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (c < 0x20) {
      u16(c);
    } else if (c < 0x80 || !ensure_ascii) {
      out += static_cast<char>(c);
    } else {
      // decode one UTF-8 sequence; invalid bytes are written as U+FFFD
      unsigned cp = 0xfffd;
      std::size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
      if (len > 1 && i + len <= s.size()) {
        cp = c & (0xff >> (len + 1));
        for (std::size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
        i += len - 1;
      }
      if (cp >= 0x10000) {
        cp -= 0x10000;
        u16(0xd800 + (cp >> 10));
        u16(0xdc00 + (cp & 0x3ff));
      } else {
        u16(cp);
      }
    }
  }
  out += '"';
}

namespace {

void write_tensor(std::string& out, const protocol::Tensor& t, std::size_t dim, std::size_t& index,
                  const JsonStyle& st) {
  if (dim == t.shape.size()) {
    const std::size_t i = index++;
    switch (t.dtype) {
      case protocol::DType::Bool: out += t.at<uint8_t>(i) ? "true" : "false"; return;
      case protocol::DType::Float16:
      case protocol::DType::Float32:
      case protocol::DType::Float64: out += py_float(t.as_double(i)); return;
      case protocol::DType::UInt64: out += std::to_string(t.at<uint64_t>(i)); return;
      case protocol::DType::Int64: out += std::to_string(t.at<int64_t>(i)); return;
      default: out += std::to_string(static_cast<long long>(t.as_double(i))); return;
    }
  }
  out += '[';
  for (uint64_t k = 0; k < t.shape[dim]; ++k) {
    if (k) out += st.item_sep;
    write_tensor(out, t, dim + 1, index, st);
  }
  out += ']';
}

}  // namespace

void write_json(std::string& out, const Value& v, const JsonStyle& st) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          out += "null";
        } else if constexpr (std::is_same_v<T, bool>) {
          out += x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, uint64_t>) {
          out += std::to_string(x);
        } else if constexpr (std::is_same_v<T, double>) {
          out += py_float(x);
        } else if constexpr (std::is_same_v<T, std::string>) {
          write_json_string(out, x, st.ensure_ascii);
        } else if constexpr (std::is_same_v<T, protocol::Binary>) {
          write_json_string(out, x.bytes, st.ensure_ascii);
        } else if constexpr (std::is_same_v<T, protocol::Array>) {
          out += '[';
          for (std::size_t i = 0; i < x.size(); ++i) {
            if (i) out += st.item_sep;
            write_json(out, x[i], st);
          }
          out += ']';
        } else if constexpr (std::is_same_v<T, protocol::Map>) {
          std::vector<const std::pair<std::string, Value>*> items;
          items.reserve(x.size());
          for (const auto& kv : x) items.push_back(&kv);
          if (st.sort_keys) {
            std::sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
          }
          out += '{';
          for (std::size_t i = 0; i < items.size(); ++i) {
            if (i) out += st.item_sep;
            write_json_string(out, items[i]->first, st.ensure_ascii);
            out += st.key_sep;
            write_json(out, items[i]->second, st);
          }
          out += '}';
        } else if constexpr (std::is_same_v<T, protocol::Tensor>) {
          std::size_t index = 0;
          write_tensor(out, x, 0, index, st);
        } else if constexpr (std::is_same_v<T, protocol::BigInt>) {
          out += x.digits;  // a JSON number, as Python's json.dumps writes a big int
        }
      },
      v.storage());
}

std::string to_json(const Value& v, const JsonStyle& style) {
  std::string out;
  write_json(out, v, style);
  return out;
}

Value from_json(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return Value();
    case Json::value_t::boolean: return Value(j.get<bool>());
    case Json::value_t::number_integer: return Value(j.get<int64_t>());
    case Json::value_t::number_unsigned: return Value(j.get<uint64_t>());
    case Json::value_t::number_float: return Value(j.get<double>());
    case Json::value_t::string: return Value(j.get<std::string>());
    case Json::value_t::array: {
      protocol::Array a;
      for (const auto& e : j) a.push_back(from_json(e));
      return Value(std::move(a));
    }
    case Json::value_t::object: {
      protocol::Map m;
      for (const auto& [k, e] : j.items()) m.emplace_back(k, from_json(e));
      return Value(std::move(m));
    }
    default: return Value();
  }
}

namespace {
std::string py_repr_string(const std::string& s) {
  // Python picks single quotes unless the text has a ' and no ".
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\') out += "\\\\";
    else if (static_cast<char>(c) == q) out += std::string("\\") + q;
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else out += static_cast<char>(c);
  }
  return out + static_cast<char>(q);
}
}  // namespace

std::string py_repr(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return "None";
    case Json::value_t::boolean: return j.get<bool>() ? "True" : "False";
    case Json::value_t::number_integer: return std::to_string(j.get<int64_t>());
    case Json::value_t::number_unsigned: return std::to_string(j.get<uint64_t>());
    case Json::value_t::number_float: {
      const double d = j.get<double>();
      if (std::isnan(d)) return "nan";
      if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
      return py_float(d);
    }
    case Json::value_t::string: return py_repr_string(j.get<std::string>());
    case Json::value_t::array: {
      std::string out = "[";
      bool first = true;
      for (const auto& e : j) {
        if (!first) out += ", ";
        first = false;
        out += py_repr(e);
      }
      return out + "]";
    }
    case Json::value_t::object: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, e] : j.items()) {
        if (!first) out += ", ";
        first = false;
        out += py_repr_string(k) + ": " + py_repr(e);
      }
      return out + "}";
    }
    default: return "None";
  }
}

std::string py_str(const Json& j) { return j.is_string() ? j.get<std::string>() : py_repr(j); }

std::size_t json_depth(std::string_view text) {
  std::size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') deepest = std::max(deepest, ++depth);
    else if ((c == ']' || c == '}') && depth > 0) --depth;
  }
  return deepest;
}

std::string truncate_utf8(std::string s, std::size_t max) {
  if (s.size() <= max) return s;
  std::size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xc0) == 0x80) --cut;
  s.resize(cut);
  return s;
}

}  // namespace gymfarm::frontends
