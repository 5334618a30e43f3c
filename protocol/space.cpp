#include "protocol/space.hpp"

#include <array>
#include <cmath>

namespace gymfarm::protocol {
namespace {
constexpr std::array<std::pair<Space::Kind, std::string_view>, 11> kKinds{{
    {Space::Kind::Box, "Box"},
    {Space::Kind::Discrete, "Discrete"},
    {Space::Kind::MultiDiscrete, "MultiDiscrete"},
    {Space::Kind::MultiBinary, "MultiBinary"},
    {Space::Kind::Tuple, "Tuple"},
    {Space::Kind::Dict, "Dict"},
    {Space::Kind::Text, "Text"},
    {Space::Kind::Sequence, "Sequence"},
    {Space::Kind::Graph, "Graph"},
    {Space::Kind::OneOf, "OneOf"},
    {Space::Kind::Unsupported, "Unsupported"},
}};

Value shape_value(const std::vector<uint64_t>& shape) {
  Array a;
  for (auto d : shape) a.emplace_back(static_cast<uint64_t>(d));
  return a;
}

bool read_int(const Value& v, const char* key, int64_t& out, std::string& err) {
  const Value* x = v.find(key);
  if (!x || !x->is_int()) {
    err = std::string("space: '") + key + "' must be an integer";
    return false;
  }
  out = x->as_int();
  return true;
}

bool read_tensor(const Value& v, const char* key, Tensor& out, std::string& err) {
  const Value* x = v.find(key);
  if (!x || !x->is_tensor()) {
    err = std::string("space: '") + key + "' must be an ndarray";
    return false;
  }
  out = x->as_tensor();
  return true;
}

bool read_shape(const Value& v, std::vector<uint64_t>& out, std::string& err) {
  const Value* x = v.find("shape");
  if (!x || !x->is_array()) {
    err = "space: 'shape' must be an array";
    return false;
  }
  for (const auto& d : x->as_array()) {
    if (!d.is_int() || d.as_int() < 0) {
      err = "space: shape entries must be non-negative integers";
      return false;
    }
    out.push_back(static_cast<uint64_t>(d.as_int()));
  }
  return true;
}

bool read_spaces(const Value& v, std::vector<Space>& out, std::string& err) {
  const Value* x = v.find("spaces");
  if (!x || !x->is_array()) {
    err = "space: 'spaces' must be an array";
    return false;
  }
  for (const auto& s : x->as_array()) {
    auto sub = Space::from_value(s, err);
    if (!sub) return false;
    out.push_back(std::move(*sub));
  }
  return true;
}

bool read_space(const Value& v, const char* key, std::vector<Space>& out, std::string& err) {
  const Value* x = v.find(key);
  if (!x || !x->is_map()) {
    err = std::string("space: '") + key + "' must be a space";
    return false;
  }
  auto sub = Space::from_value(*x, err);
  if (!sub) return false;
  out.push_back(std::move(*sub));
  return true;
}

bool tensor_in_bounds(const Tensor& t, const Space& s) {
  if (t.shape != s.shape) return false;
  const std::size_t n = t.elements();
  for (std::size_t i = 0; i < n; ++i) {
    const double x = t.as_double(i);
    if (std::isnan(x) || x < s.low.as_double(i) || x > s.high.as_double(i)) return false;
  }
  return true;
}
}  // namespace

std::string_view to_string(Space::Kind k) {
  for (const auto& [kind, name] : kKinds) {
    if (kind == k) return name;
  }
  return "Unsupported";
}

Value Space::to_value() const {
  Value v(Map{});
  v.set("type", std::string(to_string(kind)));
  switch (kind) {
    case Kind::Box:
      v.set("dtype", dtype_name(dtype));
      v.set("shape", shape_value(shape));
      v.set("low", low);
      v.set("high", high);
      break;
    case Kind::Discrete:
      v.set("n", n);
      v.set("start", start);
      break;
    case Kind::MultiDiscrete:
      v.set("nvec", nvec);
      v.set("start", mstart);
      v.set("dtype", dtype_name(dtype));
      break;
    case Kind::MultiBinary: {
      if (binary_shape.size() == 1) {
        v.set("n", binary_shape[0]);
      } else {
        Array a;
        for (auto d : binary_shape) a.emplace_back(d);
        v.set("n", std::move(a));
      }
      break;
    }
    case Kind::Tuple:
    case Kind::Dict: {
      Array subs;
      for (const auto& s : spaces) subs.push_back(s.to_value());
      if (kind == Kind::Dict) {
        Array ks;
        for (const auto& k : keys) ks.emplace_back(k);
        v.set("keys", std::move(ks));
      }
      v.set("spaces", std::move(subs));
      break;
    }
    case Kind::Sequence:
      if (!spaces.empty()) v.set("space", spaces[0].to_value());
      v.set("stack", stack);
      break;
    case Kind::Graph:
      if (!spaces.empty()) v.set("node_space", spaces[0].to_value());
      v.set("edge_space", spaces.size() > 1 ? spaces[1].to_value() : Value());
      break;
    case Kind::OneOf: {
      Array subs;
      for (const auto& s : spaces) subs.push_back(s.to_value());
      v.set("spaces", std::move(subs));
      break;
    }
    case Kind::Text:
      v.set("max_length", max_length);
      v.set("min_length", min_length);
      v.set("charset", charset);
      break;
    case Kind::Unsupported: v.set("repr", repr); break;
  }
  return v;
}

std::optional<Space> Space::from_value(const Value& v, std::string& err) {
  const Value* type = v.find("type");
  if (!type || !type->is_string()) {
    err = "space: missing 'type'";
    return std::nullopt;
  }
  Space s;
  bool known = false;
  for (const auto& [kind, name] : kKinds) {
    if (name == type->as_string()) {
      s.kind = kind;
      known = true;
    }
  }
  if (!known) {
    err = "space: unknown type '" + type->as_string() + "'";
    return std::nullopt;
  }
  auto read_dtype = [&]() {
    const Value* d = v.find("dtype");
    auto dt = (d && d->is_string()) ? dtype_from_name(d->as_string()) : std::nullopt;
    if (!dt) err = "space: bad 'dtype'";
    else s.dtype = *dt;
    return dt.has_value();
  };
  switch (s.kind) {
    case Kind::Box:
      if (!read_dtype() || !read_shape(v, s.shape, err) || !read_tensor(v, "low", s.low, err) ||
          !read_tensor(v, "high", s.high, err))
        return std::nullopt;
      if (s.low.shape != s.shape || s.high.shape != s.shape) {
        err = "space: Box bounds must have the Box's shape";
        return std::nullopt;
      }
      break;
    case Kind::Discrete:
      if (!read_int(v, "n", s.n, err) || !read_int(v, "start", s.start, err)) return std::nullopt;
      break;
    case Kind::MultiDiscrete:
      if (!read_dtype() || !read_tensor(v, "nvec", s.nvec, err) || !read_tensor(v, "start", s.mstart, err))
        return std::nullopt;
      s.shape = s.nvec.shape;
      break;
    case Kind::MultiBinary: {
      const Value* n = v.find("n");
      if (n && n->is_int()) {
        s.binary_shape = {n->as_int()};
      } else if (n && n->is_array()) {
        for (const auto& d : n->as_array()) {
          if (!d.is_int()) {
            err = "space: MultiBinary 'n' must hold integers";
            return std::nullopt;
          }
          s.binary_shape.push_back(d.as_int());
        }
      } else {
        err = "space: MultiBinary 'n' must be an integer or an array";
        return std::nullopt;
      }
      for (auto d : s.binary_shape) s.shape.push_back(static_cast<uint64_t>(d));
      break;
    }
    case Kind::Tuple:
      if (!read_spaces(v, s.spaces, err)) return std::nullopt;
      break;
    case Kind::Dict: {
      if (!read_spaces(v, s.spaces, err)) return std::nullopt;
      const Value* ks = v.find("keys");
      if (!ks || !ks->is_array() || ks->as_array().size() != s.spaces.size()) {
        err = "space: Dict 'keys' must be an array as long as 'spaces'";
        return std::nullopt;
      }
      for (const auto& k : ks->as_array()) {
        if (!k.is_string()) {
          err = "space: Dict keys must be strings";
          return std::nullopt;
        }
        s.keys.push_back(k.as_string());
      }
      break;
    }
    case Kind::Sequence: {
      if (!read_space(v, "space", s.spaces, err)) return std::nullopt;
      const Value* st = v.find("stack");
      s.stack = st && st->is_bool() && st->as_bool();
      break;
    }
    case Kind::Graph: {
      if (!read_space(v, "node_space", s.spaces, err)) return std::nullopt;
      const Value* e = v.find("edge_space");
      if (e && !e->is_nil() && !read_space(v, "edge_space", s.spaces, err)) return std::nullopt;
      break;
    }
    case Kind::OneOf:
      if (!read_spaces(v, s.spaces, err)) return std::nullopt;
      if (s.spaces.empty()) {
        err = "space: OneOf needs at least one space";
        return std::nullopt;
      }
      break;
    case Kind::Text: {
      const Value* cs = v.find("charset");
      if (!read_int(v, "max_length", s.max_length, err) || !read_int(v, "min_length", s.min_length, err))
        return std::nullopt;
      if (!cs || !cs->is_string()) {
        err = "space: Text 'charset' must be a string";
        return std::nullopt;
      }
      s.charset = cs->as_string();
      break;
    }
    case Kind::Unsupported: {
      const Value* r = v.find("repr");
      if (r && r->is_string()) s.repr = r->as_string();
      break;
    }
  }
  return s;
}

bool Space::contains(const Value& v) const {
  switch (kind) {
    case Kind::Box:
      if (v.is_tensor()) return tensor_in_bounds(v.as_tensor(), *this);
      if (v.is_number() && shape.empty()) {
        const double x = v.as_double();
        return !std::isnan(x) && x >= low.as_double(0) && x <= high.as_double(0);
      }
      return false;
    case Kind::Discrete: {
      int64_t x;
      if (v.is_int()) x = v.as_int();
      else if (v.is_tensor() && v.as_tensor().shape.empty() && v.as_tensor().dtype != DType::Float32 &&
               v.as_tensor().dtype != DType::Float64 && v.as_tensor().dtype != DType::Float16)
        x = static_cast<int64_t>(v.as_tensor().as_double(0));
      else return false;
      return x >= start && x < start + n;
    }
    case Kind::MultiDiscrete: {
      if (!v.is_tensor() || v.as_tensor().shape != shape) return false;
      const auto& t = v.as_tensor();
      for (std::size_t i = 0; i < t.elements(); ++i) {
        const double x = t.as_double(i), lo = mstart.as_double(i);
        if (x < lo || x >= lo + nvec.as_double(i)) return false;
      }
      return true;
    }
    case Kind::MultiBinary: {
      if (!v.is_tensor() || v.as_tensor().shape != shape) return false;
      const auto& t = v.as_tensor();
      for (std::size_t i = 0; i < t.elements(); ++i) {
        const double x = t.as_double(i);
        if (x != 0.0 && x != 1.0) return false;
      }
      return true;
    }
    case Kind::Tuple: {
      if (!v.is_array() || v.as_array().size() != spaces.size()) return false;
      for (std::size_t i = 0; i < spaces.size(); ++i) {
        if (!spaces[i].contains(v.as_array()[i])) return false;
      }
      return true;
    }
    case Kind::Dict: {
      if (!v.is_map() || v.as_map().size() != spaces.size()) return false;
      for (std::size_t i = 0; i < spaces.size(); ++i) {
        const Value* x = v.find(keys[i]);
        if (!x || !spaces[i].contains(*x)) return false;
      }
      return true;
    }
    case Kind::Text: {
      if (!v.is_string()) return false;
      const auto len = static_cast<int64_t>(v.as_string().size());
      if (len < min_length || len > max_length) return false;
      for (char c : v.as_string()) {
        if (charset.find(c) == std::string::npos) return false;
      }
      return true;
    }
    case Kind::Sequence: {
      if (spaces.empty()) return false;
      if (stack) return true;  // a stacked batch: its element count is free
      if (!v.is_array()) return false;
      for (const auto& x : v.as_array()) {
        if (!spaces[0].contains(x)) return false;
      }
      return true;
    }
    case Kind::Graph: {  // [nodes, edges, edge_links]
      if (spaces.empty() || !v.is_array() || v.as_array().size() != 3) return false;
      const Value& nodes = v.as_array()[0];
      if (!nodes.is_tensor() || nodes.as_tensor().shape.empty()) return false;
      return true;
    }
    case Kind::OneOf: {  // [index, value]
      if (!v.is_array() || v.as_array().size() != 2 || !v.as_array()[0].is_int()) return false;
      const int64_t i = v.as_array()[0].as_int();
      if (i < 0 || i >= static_cast<int64_t>(spaces.size())) return false;
      return spaces[static_cast<std::size_t>(i)].contains(v.as_array()[1]);
    }
    case Kind::Unsupported: return false;
  }
  return false;
}

}  // namespace gymfarm::protocol
