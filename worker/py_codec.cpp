#include "worker/py_codec.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <deque>
#include <msgpack.hpp>
#include <stdexcept>
#include <unordered_map>
#include <vector>

#include "protocol/codec.hpp"

namespace gymfarm::worker {
namespace {

using StringBuffer = protocol::StringSink;
using Packer = msgpack::packer<StringBuffer>;

constexpr int kMaxDepth = 64;

// MessagePack lengths are 32-bit; a longer str, bin or array would be written with a wrapped length.
uint32_t length32(std::size_t n) {
  if (n > UINT32_MAX) throw std::runtime_error("value too large for one message (over 4 GiB or 2^32 items)");
  return static_cast<uint32_t>(n);
}

void pack_str(Packer& pk, std::string_view s) {
  pk.pack_str(length32(s.size()));
  pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}

// numpy is reached through its Python API and the buffer protocol only, so the worker does not
// depend on numpy's C ABI (which changed in numpy 2).
struct Numpy {
  py::object asarray, empty, dtype;
  PyTypeObject* ndarray = nullptr;  // numpy.ndarray and numpy.generic (the scalars), for type checks
  PyTypeObject* generic = nullptr;
  PyTypeObject* float64 = nullptr;                         // numpy.float64, the scalar of most rewards and infos
  std::unordered_map<protocol::DType, py::object> dtypes;  // numpy.dtype objects, made once each
  static Numpy& get() {
    static Numpy* np = [] {
      auto m = py::module_::import("numpy");
      auto* n = new Numpy{m.attr("asarray"), m.attr("empty"), m.attr("dtype"), nullptr, nullptr, nullptr, {}, {}};
      n->ndarray = reinterpret_cast<PyTypeObject*>(py::object(m.attr("ndarray")).release().ptr());
      n->generic = reinterpret_cast<PyTypeObject*>(py::object(m.attr("generic")).release().ptr());
      n->float64 = reinterpret_cast<PyTypeObject*>(py::object(m.attr("float64")).release().ptr());
      return n;
    }();
    return *np;
  }
  std::unordered_map<protocol::DType, py::object> scalar_types;  // numpy.int64, numpy.float32, ...
  py::object dtype_of(protocol::DType d) {
    auto it = dtypes.find(d);
    if (it == dtypes.end()) it = dtypes.emplace(d, dtype(protocol::dtype_str(d))).first;
    return it->second;
  }
  py::object scalar_type(protocol::DType d) {
    auto it = scalar_types.find(d);
    if (it == scalar_types.end()) it = scalar_types.emplace(d, dtype_of(d).attr("type")).first;
    return it->second;
  }
};

template <typename T>
T read_as(const std::string& data) {
  T v;
  std::memcpy(&v, data.data(), sizeof v);
  return v;
}

// A NumPy scalar built by its type from its value (numpy.int64(-3)), without a 0-d array in
// between: a Discrete action arrives as one. Null for the values a Python int, float or bool would
// not carry exactly (float16, a float32 NaN's payload): those take the array's way.
py::object scalar_from(const protocol::Tensor& t) {
  using protocol::DType;
  if (!t.valid()) return {};
  PyObject* v = nullptr;
  switch (t.dtype) {
    case DType::Bool: v = PyBool_FromLong(t.data[0] != 0); break;
    case DType::Int8: v = PyLong_FromLong(read_as<int8_t>(t.data)); break;
    case DType::Int16: v = PyLong_FromLong(read_as<int16_t>(t.data)); break;
    case DType::Int32: v = PyLong_FromLong(read_as<int32_t>(t.data)); break;
    case DType::Int64: v = PyLong_FromLongLong(read_as<int64_t>(t.data)); break;
    case DType::UInt8: v = PyLong_FromUnsignedLong(read_as<uint8_t>(t.data)); break;
    case DType::UInt16: v = PyLong_FromUnsignedLong(read_as<uint16_t>(t.data)); break;
    case DType::UInt32: v = PyLong_FromUnsignedLong(read_as<uint32_t>(t.data)); break;
    case DType::UInt64: v = PyLong_FromUnsignedLongLong(read_as<uint64_t>(t.data)); break;
    case DType::Float32: {
      const auto f = read_as<float>(t.data);
      if (std::isnan(f)) return {};
      v = PyFloat_FromDouble(f);
      break;
    }
    case DType::Float64: v = PyFloat_FromDouble(read_as<double>(t.data)); break;
    case DType::Float16: return {};
  }
  if (v == nullptr) throw py::error_already_set();
  const py::object owned = py::reinterpret_steal<py::object>(v);  // v, released after the call
  py::object out = py::reinterpret_steal<py::object>(PyObject_CallOneArg(Numpy::get().scalar_type(t.dtype).ptr(), v));
  if (!out) throw py::error_already_set();
  return out;
}

struct Buffer {
  Py_buffer view{};
  bool ok = false;
  Buffer(PyObject* o, int flags) { ok = PyObject_GetBuffer(o, &view, flags) == 0; }
  ~Buffer() {
    if (ok) PyBuffer_Release(&view);
  }
};

// The ext payload of an ndarray: [dtype, shape, bin], the data written straight from its buffer.
template <typename Dims>
void write_ndarray(Packer& pk, StringBuffer& buf, std::string_view dtype, const Dims& shape, std::size_t ndim,
                   const void* data, std::size_t len) {
  std::string head;
  StringBuffer hb{&head};
  Packer hp(hb);
  hp.pack_array(3);
  pack_str(hp, dtype);
  hp.pack_array(length32(ndim));
  for (std::size_t i = 0; i < ndim; ++i) hp.pack_uint64(static_cast<uint64_t>(shape[i]));
  const uint32_t nbytes = length32(len);
  hp.pack_bin(nbytes);
  pk.pack_ext(length32(head.size() + nbytes), protocol::kNdarrayExt);
  buf.s->append(head);
  buf.s->append(static_cast<const char*>(data), nbytes);
}

// The dtype string ("<f8", "|u1", "|b1") of a little-endian buffer format of numbers, or "".
std::string dtype_of_format(const char* format, Py_ssize_t itemsize) {
  std::string_view f = format ? format : "B";
  if (!f.empty() && (f[0] == '@' || f[0] == '=' || f[0] == '<')) f.remove_prefix(1);
  if (f.size() != 1) return {};
  char kind = 0;
  switch (f[0]) {
    case '?': kind = 'b'; break;
    case 'b':
    case 'h':
    case 'i':
    case 'l':
    case 'q': kind = 'i'; break;
    case 'B':
    case 'H':
    case 'I':
    case 'L':
    case 'Q': kind = 'u'; break;
    case 'e':
    case 'f':
    case 'd': kind = 'f'; break;
    default: return {};
  }
  if (itemsize != 1 && itemsize != 2 && itemsize != 4 && itemsize != 8) return {};
  if (kind == 'b' && itemsize != 1) return {};
  std::string out(1, itemsize == 1 ? '|' : '<');
  out += kind;
  out += static_cast<char>('0' + itemsize);
  return out;
}

// A numpy array or scalar of numbers, packed from its buffer without a call into Python. False
// (nothing written) for anything else, or an array this path does not take (not C-contiguous,
// big-endian, complex, structured): pack_ndarray decides those as before.
bool pack_numpy_buffer(Packer& pk, StringBuffer& buf, PyObject* o) {
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the wire's arrays are little-endian");
  auto& np = Numpy::get();
  if (Py_TYPE(o) == np.float64) {  // a float subclass: its value is a PyFloat's, read without a buffer
    const double v = PyFloat_AS_DOUBLE(o);
    write_ndarray(pk, buf, "<f8", std::array<Py_ssize_t, 0>{}, 0, &v, sizeof v);
    return true;
  }
  if (!PyObject_TypeCheck(o, np.ndarray) && !PyObject_TypeCheck(o, np.generic)) return false;
  if (PyUnicode_Check(o) || PyBytes_Check(o)) return false;
  Buffer b(o, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT);
  if (!b.ok) {
    PyErr_Clear();
    return false;
  }
  const std::string dtype = dtype_of_format(b.view.format, b.view.itemsize);
  if (dtype.empty()) return false;
  const auto ndim = static_cast<std::size_t>(std::max(b.view.ndim, 0));
  write_ndarray(pk, buf, dtype, b.view.shape, ndim, b.view.buf, static_cast<std::size_t>(b.view.len));
  return true;
}

}  // namespace

py::object stack_rows(py::handle rows) {
  auto& np = Numpy::get();
  PyObject* list = rows.ptr();
  if (!PyList_CheckExact(list)) return {};
  const Py_ssize_t n = PyList_GET_SIZE(list);
  std::deque<Buffer> held;  // (a Buffer does not move)
  std::vector<const Buffer*> row(static_cast<std::size_t>(n), nullptr);
  const Buffer* first = nullptr;
  std::string dtype;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* o = PyList_GET_ITEM(list, i);
    if (o == Py_None) continue;
    if (Py_TYPE(o) != np.ndarray) return {};  // a subclass, a scalar, a list: numpy.stack decides
    const Buffer& b = held.emplace_back(o, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT);
    if (!b.ok) {
      PyErr_Clear();
      return {};
    }
    const std::string d = dtype_of_format(b.view.format, b.view.itemsize);
    if (d.empty()) return {};  // big-endian, complex, structured, objects
    if (first == nullptr) {
      first = &b;
      dtype = d;
    } else if (d != dtype || b.view.ndim != first->view.ndim || b.view.len != first->view.len ||
               !std::equal(b.view.shape, b.view.shape + b.view.ndim, first->view.shape)) {
      return {};  // rows that differ: numpy.stack raises or promotes
    }
    row[static_cast<std::size_t>(i)] = &b;
  }
  const auto dt = protocol::dtype_from_str(dtype);
  if (first == nullptr || !dt) return {};
  py::tuple shape(first->view.ndim + 1);
  shape[0] = py::int_(n);
  for (int k = 0; k < first->view.ndim; ++k) shape[k + 1] = py::int_(first->view.shape[k]);
  py::object out;
  try {
    out = np.empty(shape, np.dtype_of(*dt));
  } catch (py::error_already_set&) {
    return {};  // (more dimensions than numpy allows, say): numpy.stack decides, and says why
  }
  Buffer dst(out.ptr(), PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE);
  const auto len = static_cast<std::size_t>(first->view.len);
  if (!dst.ok || static_cast<std::size_t>(dst.view.len) != len * static_cast<std::size_t>(n)) {
    PyErr_Clear();
    return {};
  }
  char* at = static_cast<char*>(dst.view.buf);
  for (const Buffer* b : row) {
    if (b != nullptr) {
      std::memcpy(at, b->view.buf, len);
    } else {
      std::memset(at, 0, len);  // a failed row: zeros, as numpy.zeros_like of a good one
    }
    at += len;
  }
  return out;
}

bool write_raw(py::handle obj, const RawPlace& place) {
  auto& np = Numpy::get();
  PyObject* o = obj.ptr();
  if (!PyObject_TypeCheck(o, np.ndarray)) return false;
  Buffer b(o, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT);
  if (!b.ok) {
    PyErr_Clear();
    return false;
  }
  if (b.view.ndim < 1) return false;  // 0-d: the client's decoder makes a NumPy scalar of it
  const std::string dtype = dtype_of_format(b.view.format, b.view.itemsize);
  if (dtype.empty()) return false;
  const auto ndim = static_cast<std::size_t>(b.view.ndim);
  std::string desc;  // as write_ndarray's head: [dtype, shape]
  StringBuffer db{&desc};
  Packer dp(db);
  dp.pack_array(2);
  pack_str(dp, dtype);
  dp.pack_array(length32(ndim));
  for (std::size_t i = 0; i < ndim; ++i) dp.pack_uint64(static_cast<uint64_t>(b.view.shape[i]));
  const auto len = static_cast<std::size_t>(b.view.len);
  char* to = place(desc, len);
  if (to == nullptr) return false;
  if (len > 0) std::memcpy(to, b.view.buf, len);
  return true;
}

namespace {

bool pack_ndarray(Packer& pk, StringBuffer& buf, py::handle obj) {
  auto& np = Numpy::get();
  py::object arr = np.asarray(obj, py::arg("order") = "C");
  py::object dt = arr.attr("dtype");
  const std::string kind_s = dt.attr("kind").cast<std::string>();
  const auto size = dt.attr("itemsize").cast<std::size_t>();
  const char kind = kind_s.empty() ? '?' : kind_s[0];
  if (kind != 'b' && kind != 'i' && kind != 'u' && kind != 'f') return false;
  if (dt.attr("byteorder").cast<std::string>() == ">") {
    arr = np.asarray(arr, py::arg("dtype") = dt.attr("newbyteorder")("<"), py::arg("order") = "C");
  }
  Buffer b(arr.ptr(), PyBUF_C_CONTIGUOUS);
  if (!b.ok) throw py::error_already_set();
  std::string dtype(1, size == 1 ? '|' : '<');
  dtype += kind;
  dtype += std::to_string(size);
  py::tuple shape = arr.attr("shape");
  std::vector<uint64_t> dims;
  for (auto d : shape) dims.push_back(d.cast<uint64_t>());
  write_ndarray(pk, buf, dtype, dims, dims.size(), b.view.buf, static_cast<std::size_t>(b.view.len));
  return true;
}

// An int beyond 64 bits: ext type 2 with its decimal digits (docs/protocol.md "Values"). One with
// more digits than Python converts to text (4300 by default) raises ValueError: an env_error.
void pack_bigint(Packer& pk, py::handle obj) {
  py::object text = py::reinterpret_steal<py::object>(PyNumber_ToBase(obj.ptr(), 10));  // int subclasses too
  if (!text) throw py::error_already_set();
  Py_ssize_t n = 0;
  const char* s = PyUnicode_AsUTF8AndSize(text.ptr(), &n);
  if (!s) throw py::error_already_set();
  const std::string_view digits(s, static_cast<std::size_t>(n));
  if (!protocol::valid_bigint_digits(digits)) throw std::runtime_error("integer too large to send (over 4300 digits)");
  pk.pack_ext(length32(digits.size()), protocol::kBigIntExt);
  pk.pack_ext_body(digits.data(), length32(digits.size()));
}

void pack_obj(Packer& pk, StringBuffer& buf, py::handle obj, int depth) {
  if (depth > kMaxDepth) throw std::runtime_error("value nested too deeply");
  PyObject* o = obj.ptr();
  if (pack_numpy_buffer(pk, buf, o)) {
    // an ndarray or numpy scalar of numbers: as pack_ndarray packs it, from its buffer
  } else if (o == Py_None) {
    pk.pack_nil();
  } else if (PyBool_Check(o)) {
    if (o == Py_True) pk.pack_true();
    else pk.pack_false();
  } else if (PyLong_Check(o)) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow == 0) {
      if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
      pk.pack_int64(v);
      return;
    }
    if (overflow > 0) {
      const unsigned long long u = PyLong_AsUnsignedLongLong(o);
      if (!PyErr_Occurred()) {
        pk.pack_uint64(u);
        return;
      }
      PyErr_Clear();  // beyond uint64: a big int
    }
    pack_bigint(pk, obj);
  } else if (PyFloat_CheckExact(o) || (PyFloat_Check(o) && !PyObject_HasAttrString(o, "dtype"))) {
    protocol::append_float64(*buf.s, PyFloat_AS_DOUBLE(o));
  } else if (PyUnicode_Check(o)) {
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(o, &n);
    if (!s) throw py::error_already_set();
    pack_str(pk, std::string_view(s, static_cast<std::size_t>(n)));
  } else if (PyBytes_Check(o)) {
    const uint32_t n = length32(static_cast<std::size_t>(PyBytes_GET_SIZE(o)));
    pk.pack_bin(n);
    pk.pack_bin_body(PyBytes_AS_STRING(o), n);
  } else if (PyDict_Check(o)) {
    pk.pack_map(length32(static_cast<std::size_t>(PyDict_Size(o))));
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(o, &pos, &k, &v)) {
      if (PyUnicode_Check(k)) {
        pack_obj(pk, buf, k, depth + 1);
      } else {
        pack_str(pk, py::str(k).cast<std::string>());
      }
      pack_obj(pk, buf, v, depth + 1);
    }
  } else if (PyList_Check(o) || PyTuple_Check(o)) {
    py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
    pk.pack_array(length32(seq.size()));
    for (auto item : seq) pack_obj(pk, buf, item, depth + 1);
  } else if (PyObject_CheckBuffer(o) && PyObject_HasAttrString(o, "dtype")) {
    // ndarrays and numpy scalars (np.float32(1.0) travels as a 0-d array)
    if (!pack_ndarray(pk, buf, obj)) pack_str(pk, py::repr(obj).cast<std::string>());
  } else {
    pack_str(pk, py::repr(obj).cast<std::string>());
  }
}

py::object to_py(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL: return py::none();
    case msgpack::type::BOOLEAN: return py::bool_(o.via.boolean);
    case msgpack::type::POSITIVE_INTEGER:
      return py::reinterpret_steal<py::object>(PyLong_FromUnsignedLongLong(o.via.u64));
    case msgpack::type::NEGATIVE_INTEGER: return py::reinterpret_steal<py::object>(PyLong_FromLongLong(o.via.i64));
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return py::float_(o.via.f64);
    case msgpack::type::STR: return py::str(o.via.str.ptr, o.via.str.size);
    case msgpack::type::BIN: return py::bytes(o.via.bin.ptr, o.via.bin.size);
    case msgpack::type::ARRAY: {
      py::list l(o.via.array.size);
      for (uint32_t i = 0; i < o.via.array.size; ++i) l[i] = to_py(o.via.array.ptr[i]);
      return std::move(l);
    }
    case msgpack::type::MAP: {
      py::dict d;
      for (uint32_t i = 0; i < o.via.map.size; ++i) {
        const auto& kv = o.via.map.ptr[i];
        d[to_py(kv.key)] = to_py(kv.val);
      }
      return std::move(d);
    }
    case msgpack::type::EXT: {
      if (o.via.ext.type() == protocol::kBigIntExt) {
        const std::string digits(o.via.ext.data(), o.via.ext.size);
        if (!protocol::valid_bigint_digits(digits)) throw std::runtime_error("malformed big integer (ext type 2)");
        py::object i = py::reinterpret_steal<py::object>(PyLong_FromString(digits.c_str(), nullptr, 10));
        if (!i) throw py::error_already_set();
        return i;
      }
      if (o.via.ext.type() != protocol::kNdarrayExt) throw std::runtime_error("unknown extension type");
      protocol::Tensor t;
      std::string err;
      if (!protocol::decode_tensor_payload(std::string_view(o.via.ext.data(), o.via.ext.size), t, err)) {
        throw std::runtime_error(err);
      }
      if (t.shape.empty())
        if (py::object scalar = scalar_from(t)) return scalar;
      auto& np = Numpy::get();
      py::tuple shape(t.shape.size());
      for (std::size_t i = 0; i < t.shape.size(); ++i) shape[i] = py::int_(t.shape[i]);
      py::object arr = np.empty(shape, np.dtype_of(t.dtype));
      {
        Buffer b(arr.ptr(), PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE);
        if (!b.ok) throw py::error_already_set();
        if (static_cast<std::size_t>(b.view.len) != t.data.size()) throw std::runtime_error("ndarray size mismatch");
        std::memcpy(b.view.buf, t.data.data(), t.data.size());
      }
      if (t.shape.empty()) return arr[py::tuple()];  // numpy scalar
      return arr;
    }
  }
  throw std::runtime_error("unsupported msgpack type");
}

}  // namespace

std::string pack(py::handle obj) {
  std::string out;
  StringBuffer buf{&out};
  Packer pk(buf);
  pack_obj(pk, buf, obj, 0);
  return out;
}

std::string pack_map(std::initializer_list<std::pair<std::string_view, py::handle>> fields) {
  std::string out;
  StringBuffer buf{&out};
  Packer pk(buf);
  pk.pack_map(length32(fields.size()));
  for (const auto& [key, value] : fields) {
    pack_str(pk, key);
    pack_obj(pk, buf, value, 1);
  }
  return out;
}

py::object unpack(std::string_view body) {
  if (body.empty()) return py::dict();
  std::size_t off = 0;
  msgpack::object_handle oh;
  try {
    protocol::DecodeLimits lim;
    oh = msgpack::unpack(body.data(), body.size(), off, nullptr, nullptr,
                         msgpack::unpack_limit(lim.max_items, lim.max_items, lim.max_bytes, lim.max_bytes,
                                               lim.max_bytes, lim.max_depth));
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("malformed message body: ") + e.what());
  }
  if (off != body.size()) throw std::runtime_error("trailing bytes after the message body");
  const msgpack::object& top = oh.get();
  if (top.type != msgpack::type::MAP) return to_py(top);
  // A request's action (or a vector step's actions) that does not decode is the action's fault:
  // bad_action, raised as the host's BadAction so the host's error_map names it. Everything else
  // that does not decode is the request's (bad_request).
  py::dict d;
  for (uint32_t i = 0; i < top.via.map.size; ++i) {
    const auto& kv = top.via.map.ptr[i];
    py::object key = to_py(kv.key);
    const bool is_action = kv.key.type == msgpack::type::STR &&
                           (std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == "action" ||
                            std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == "actions");
    if (!is_action) {
      d[key] = to_py(kv.val);
      continue;
    }
    std::string why;
    try {
      d[key] = to_py(kv.val);
      continue;
    } catch (py::error_already_set& e) {
      why = e.what();
    } catch (const std::exception& e) {
      why = e.what();
    }
    py::object bad = py::module_::import("gymfarm_host").attr("BadAction");
    PyErr_SetString(bad.ptr(), ("the action cannot be decoded: " + why).c_str());
    throw py::error_already_set();
  }
  return std::move(d);
}

}  // namespace gymfarm::worker
