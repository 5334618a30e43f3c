#include "protocol/codec.hpp"

#include <cstring>
#include <msgpack.hpp>

namespace gymfarm::protocol {
namespace {

using StringBuffer = StringSink;
using Packer = msgpack::packer<StringBuffer>;

void pack(Packer& pk, StringBuffer& buf, const Value& v);

void pack_tensor(Packer& pk, const Tensor& t) {
  const std::string payload = encode_tensor_payload(t);
  pk.pack_ext(payload.size(), kNdarrayExt);
  pk.pack_ext_body(payload.data(), payload.size());
}

void pack(Packer& pk, StringBuffer& buf, const Value& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          pk.pack_nil();
        } else if constexpr (std::is_same_v<T, bool>) {
          if (x) pk.pack_true();
          else pk.pack_false();
        } else if constexpr (std::is_same_v<T, int64_t>) {
          pk.pack_int64(x);
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          pk.pack_uint64(x);
        } else if constexpr (std::is_same_v<T, double>) {
          append_float64(*buf.s, x);
        } else if constexpr (std::is_same_v<T, std::string>) {
          pk.pack_str(static_cast<uint32_t>(x.size()));
          pk.pack_str_body(x.data(), static_cast<uint32_t>(x.size()));
        } else if constexpr (std::is_same_v<T, Binary>) {
          pk.pack_bin(static_cast<uint32_t>(x.bytes.size()));
          pk.pack_bin_body(x.bytes.data(), static_cast<uint32_t>(x.bytes.size()));
        } else if constexpr (std::is_same_v<T, Array>) {
          pk.pack_array(static_cast<uint32_t>(x.size()));
          for (const auto& e : x) pack(pk, buf, e);
        } else if constexpr (std::is_same_v<T, Map>) {
          pk.pack_map(static_cast<uint32_t>(x.size()));
          for (const auto& [k, e] : x) {
            pk.pack_str(static_cast<uint32_t>(k.size()));
            pk.pack_str_body(k.data(), static_cast<uint32_t>(k.size()));
            pack(pk, buf, e);
          }
        } else if constexpr (std::is_same_v<T, Tensor>) {
          pack_tensor(pk, x);
        } else if constexpr (std::is_same_v<T, BigInt>) {
          pk.pack_ext(x.digits.size(), kBigIntExt);
          pk.pack_ext_body(x.digits.data(), x.digits.size());
        }
      },
      v.storage());
}

bool convert(const msgpack::object& o, Value& out, std::string& err) {
  switch (o.type) {
    case msgpack::type::NIL: out = Value(); return true;
    case msgpack::type::BOOLEAN: out = Value(o.via.boolean); return true;
    case msgpack::type::POSITIVE_INTEGER: out = Value(static_cast<uint64_t>(o.via.u64)); return true;
    case msgpack::type::NEGATIVE_INTEGER: out = Value(static_cast<int64_t>(o.via.i64)); return true;
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: out = Value(o.via.f64); return true;
    case msgpack::type::STR: out = Value(std::string(o.via.str.ptr, o.via.str.size)); return true;
    case msgpack::type::BIN: out = Value(Binary{std::string(o.via.bin.ptr, o.via.bin.size)}); return true;
    case msgpack::type::ARRAY: {
      Array a;
      a.resize(o.via.array.size);
      for (uint32_t i = 0; i < o.via.array.size; ++i) {
        if (!convert(o.via.array.ptr[i], a[i], err)) return false;
      }
      out = Value(std::move(a));
      return true;
    }
    case msgpack::type::MAP: {
      Map m;
      m.reserve(o.via.map.size);
      for (uint32_t i = 0; i < o.via.map.size; ++i) {
        const auto& kv = o.via.map.ptr[i];
        if (kv.key.type != msgpack::type::STR) {
          err = "map keys must be strings";
          return false;
        }
        Value v;
        if (!convert(kv.val, v, err)) return false;
        m.emplace_back(std::string(kv.key.via.str.ptr, kv.key.via.str.size), std::move(v));
      }
      out = Value(std::move(m));
      return true;
    }
    case msgpack::type::EXT: {
      if (o.via.ext.type() == kBigIntExt) {
        const std::string_view digits(o.via.ext.data(), o.via.ext.size);
        if (!valid_bigint_digits(digits)) {
          err = "malformed big integer (ext type 2)";
          return false;
        }
        out = Value(BigInt{std::string(digits)});
        return true;
      }
      if (o.via.ext.type() != kNdarrayExt) {
        err = "unknown extension type " + std::to_string(o.via.ext.type());
        return false;
      }
      Tensor t;
      if (!decode_tensor_payload(std::string_view(o.via.ext.data(), o.via.ext.size), t, err)) return false;
      out = Value(std::move(t));
      return true;
    }
  }
  err = "unsupported msgpack type";
  return false;
}

msgpack::unpack_limit to_limit(const DecodeLimits& l) {
  const auto items = l.max_items;
  return msgpack::unpack_limit(items, items, l.max_bytes, l.max_bytes, l.max_bytes, l.max_depth);
}

}  // namespace

void encode_to(std::string& out, const Value& v) {
  StringBuffer buf{&out};
  Packer pk(buf);
  pack(pk, buf, v);
}

void append_float64(std::string& out, double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, sizeof bits);
  char b[9];
  b[0] = static_cast<char>(0xcb);
  for (int i = 0; i < 8; ++i) b[1 + i] = static_cast<char>((bits >> (56 - 8 * i)) & 0xff);
  out.append(b, 9);
}

bool valid_bigint_digits(std::string_view d) {
  const bool negative = !d.empty() && d[0] == '-';
  if (negative) d.remove_prefix(1);
  if (d.empty() || d.size() > kMaxBigIntDigits || (d[0] == '0' && (d.size() > 1 || negative))) return false;
  for (char c : d) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

std::string encode(const Value& v) {
  std::string out;
  encode_to(out, v);
  return out;
}

std::string encode_tensor_payload(const Tensor& t) {
  std::string out;
  StringBuffer buf{&out};
  Packer pk(buf);
  pk.pack_array(3);
  const std::string ds = dtype_str(t.dtype);
  pk.pack_str(static_cast<uint32_t>(ds.size()));
  pk.pack_str_body(ds.data(), static_cast<uint32_t>(ds.size()));
  pk.pack_array(static_cast<uint32_t>(t.shape.size()));
  for (auto d : t.shape) pk.pack_uint64(d);
  pk.pack_bin(static_cast<uint32_t>(t.data.size()));
  pk.pack_bin_body(t.data.data(), static_cast<uint32_t>(t.data.size()));
  return out;
}

bool decode_tensor_payload(std::string_view payload, Tensor& out, std::string& err) {
  try {
    std::size_t off = 0;
    DecodeLimits lim;
    lim.max_depth = 3;
    auto oh = msgpack::unpack(payload.data(), payload.size(), off, nullptr, nullptr, to_limit(lim));
    if (off != payload.size()) {
      err = "ndarray: trailing bytes";
      return false;
    }
    const auto& o = oh.get();
    if (o.type != msgpack::type::ARRAY || o.via.array.size != 3) {
      err = "ndarray: payload must be [dtype, shape, data]";
      return false;
    }
    const auto& d = o.via.array.ptr[0];
    const auto& s = o.via.array.ptr[1];
    const auto& b = o.via.array.ptr[2];
    if (d.type != msgpack::type::STR || s.type != msgpack::type::ARRAY || b.type != msgpack::type::BIN) {
      err = "ndarray: payload must be [str, array, bin]";
      return false;
    }
    auto dt = dtype_from_str(std::string_view(d.via.str.ptr, d.via.str.size));
    if (!dt) {
      err = "ndarray: unsupported dtype '" + std::string(d.via.str.ptr, d.via.str.size) + "'";
      return false;
    }
    Tensor t;
    t.dtype = *dt;
    unsigned __int128 elements = 1;
    for (uint32_t i = 0; i < s.via.array.size; ++i) {
      const auto& e = s.via.array.ptr[i];
      if (e.type != msgpack::type::POSITIVE_INTEGER) {
        err = "ndarray: shape entries must be non-negative integers";
        return false;
      }
      t.shape.push_back(e.via.u64);
      elements *= e.via.u64;
      if (elements > (unsigned __int128)payload.size() * 8 + 1) {
        err = "ndarray: shape does not match data";
        return false;
      }
    }
    t.data.assign(b.via.bin.ptr, b.via.bin.size);
    if (!t.valid()) {
      err = "ndarray: shape does not match data";
      return false;
    }
    out = std::move(t);
    return true;
  } catch (const std::exception& e) {
    err = std::string("ndarray: ") + e.what();
    return false;
  }
}

bool decode(std::string_view bytes, Value& out, std::string& err, const DecodeLimits& limits) {
  if (bytes.empty()) {
    out = Value(Map{});
    return true;
  }
  if (bytes.size() > limits.max_bytes) {
    err = "message too large";
    return false;
  }
  try {
    std::size_t off = 0;
    auto oh = msgpack::unpack(bytes.data(), bytes.size(), off, nullptr, nullptr, to_limit(limits));
    if (off != bytes.size()) {
      err = "trailing bytes after the message body";
      return false;
    }
    return convert(oh.get(), out, err);
  } catch (const msgpack::depth_size_overflow&) {
    err = "message nested too deeply";
  } catch (const msgpack::insufficient_bytes&) {
    err = "truncated message body";
  } catch (const std::exception& e) {
    err = std::string("malformed message body: ") + e.what();
  }
  return false;
}

}  // namespace gymfarm::protocol
