#pragma once
// MessagePack encoding of Value (docs/protocol.md "Values"). Decoding never throws: it reports.
#include <cstddef>
#include <string>
#include <string_view>

#include "protocol/value.hpp"

namespace gymfarm::protocol {

constexpr int8_t kNdarrayExt = 1;
constexpr int8_t kBigIntExt = 2;  // payload: the ASCII decimal digits of an integer beyond 64 bits
// Python's default limit for int <-> str conversion (sys.get_int_max_str_digits()).
constexpr std::size_t kMaxBigIntDigits = 4300;

// The output sink msgpack-cxx packers write into: appends to a std::string.
struct StringSink {
  std::string* s;
  void write(const char* p, std::size_t n) { s->append(p, n); }
};

struct DecodeLimits {
  std::size_t max_bytes = 256u << 20;  // whole body
  std::size_t max_depth = 64;          // nesting of arrays and maps
  std::size_t max_items = 1u << 24;    // elements of one array or map
};

std::string encode(const Value& v);
// Appends a MessagePack float64. msgpack-cxx's pack_double writes integral doubles as integers,
// which would turn 1.0 into 1 on the wire; floats must stay floats.
void append_float64(std::string& out, double d);
// Appends the encoding of v to out.
void encode_to(std::string& out, const Value& v);

// Decodes one value filling the whole buffer. An empty buffer decodes to an empty map.
// Returns false with a message in err on malformed, truncated, trailing or over-limit input.
bool decode(std::string_view bytes, Value& out, std::string& err, const DecodeLimits& limits = {});

// True for a canonical ext-2 payload: an optional '-', then 1 to kMaxBigIntDigits decimal digits
// without leading zeros ("0" alone, never "-0").
bool valid_bigint_digits(std::string_view digits);

// The ext-1 payload of an ndarray: msgpack [dtype, shape, data].
std::string encode_tensor_payload(const Tensor& t);
bool decode_tensor_payload(std::string_view payload, Tensor& out, std::string& err);

}  // namespace gymfarm::protocol
