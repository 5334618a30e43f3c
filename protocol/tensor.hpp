#pragma once
// An ndarray on the wire: NumPy dtype, shape and C-order bytes.
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace gymfarm::protocol {

enum class DType : uint8_t {
  Bool,
  Int8,
  Int16,
  Int32,
  Int64,
  UInt8,
  UInt16,
  UInt32,
  UInt64,
  Float16,
  Float32,
  Float64
};

std::size_t dtype_size(DType d);
std::string dtype_str(DType d);                           // NumPy dtype.str, little-endian: "<f4", "|u1"
std::optional<DType> dtype_from_str(std::string_view s);  // accepts "<f4", "=f4", "|b1"
std::string dtype_name(DType d);                          // "float32"
std::optional<DType> dtype_from_name(std::string_view s);

struct Tensor {
  DType dtype = DType::Float64;
  std::vector<uint64_t> shape;
  std::string data;  // C-order raw bytes, native (little-endian) byte order

  std::size_t elements() const;
  bool valid() const { return data.size() == elements() * dtype_size(dtype); }
  bool operator==(const Tensor&) const = default;

  template <class T>
  static Tensor from(DType d, const std::vector<T>& items, std::vector<uint64_t> shape) {
    if (sizeof(T) != dtype_size(d)) throw std::invalid_argument("Tensor::from: element size mismatch");
    Tensor t{d, std::move(shape), std::string(reinterpret_cast<const char*>(items.data()), items.size() * sizeof(T))};
    if (!t.valid()) throw std::invalid_argument("Tensor::from: shape does not match the items");
    return t;
  }
  template <class T>
  T at(std::size_t i) const {
    T out;
    std::memcpy(&out, data.data() + i * sizeof(T), sizeof(T));
    return out;
  }
  // Element i converted to double, whatever the dtype (float16 included).
  double as_double(std::size_t i) const;
};

}  // namespace gymfarm::protocol
