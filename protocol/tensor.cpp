#include "protocol/tensor.hpp"

#include <array>
#include <cmath>
#include <limits>

namespace gymfarm::protocol {
namespace {
struct DTypeInfo {
  DType dtype;
  char kind;
  std::size_t size;
  const char* name;
};
constexpr std::array<DTypeInfo, 12> kTypes{{
    {DType::Bool, 'b', 1, "bool"},
    {DType::Int8, 'i', 1, "int8"},
    {DType::Int16, 'i', 2, "int16"},
    {DType::Int32, 'i', 4, "int32"},
    {DType::Int64, 'i', 8, "int64"},
    {DType::UInt8, 'u', 1, "uint8"},
    {DType::UInt16, 'u', 2, "uint16"},
    {DType::UInt32, 'u', 4, "uint32"},
    {DType::UInt64, 'u', 8, "uint64"},
    {DType::Float16, 'f', 2, "float16"},
    {DType::Float32, 'f', 4, "float32"},
    {DType::Float64, 'f', 8, "float64"},
}};
const DTypeInfo& info(DType d) { return kTypes[static_cast<std::size_t>(d)]; }

double half_to_double(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int frac = h & 0x3ff;
  if (exp == 0) return sign * std::ldexp(frac, -24);
  if (exp == 31)
    return frac ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
  return sign * std::ldexp(frac + 1024, exp - 25);
}
}  // namespace

std::size_t dtype_size(DType d) { return info(d).size; }
std::string dtype_name(DType d) { return info(d).name; }

std::string dtype_str(DType d) {
  const auto& i = info(d);
  std::string s(1, i.size == 1 ? '|' : '<');
  s += i.kind;
  s += std::to_string(i.size);
  return s;
}

std::optional<DType> dtype_from_str(std::string_view s) {
  if (s.size() != 3) return std::nullopt;
  const char order = s[0];
  if (order != '<' && order != '|' && order != '=') return std::nullopt;
  if (s[2] < '1' || s[2] > '8') return std::nullopt;
  const std::size_t size = static_cast<std::size_t>(s[2] - '0');
  for (const auto& i : kTypes) {
    if (i.kind == s[1] && i.size == size) return i.dtype;
  }
  return std::nullopt;
}

std::optional<DType> dtype_from_name(std::string_view s) {
  for (const auto& i : kTypes) {
    if (s == i.name) return i.dtype;
  }
  return std::nullopt;
}

std::size_t Tensor::elements() const {
  std::size_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

double Tensor::as_double(std::size_t i) const {
  switch (dtype) {
    case DType::Bool: return at<uint8_t>(i) ? 1.0 : 0.0;
    case DType::Int8: return at<int8_t>(i);
    case DType::Int16: return at<int16_t>(i);
    case DType::Int32: return at<int32_t>(i);
    case DType::Int64: return static_cast<double>(at<int64_t>(i));
    case DType::UInt8: return at<uint8_t>(i);
    case DType::UInt16: return at<uint16_t>(i);
    case DType::UInt32: return at<uint32_t>(i);
    case DType::UInt64: return static_cast<double>(at<uint64_t>(i));
    case DType::Float16: return half_to_double(at<uint16_t>(i));
    case DType::Float32: return at<float>(i);
    case DType::Float64: return at<double>(i);
  }
  return 0.0;
}

}  // namespace gymfarm::protocol
