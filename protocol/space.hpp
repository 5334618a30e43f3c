#pragma once
// Gymnasium spaces as the protocol describes them (docs/protocol.md "Spaces").
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "protocol/tensor.hpp"
#include "protocol/value.hpp"

namespace gymfarm::protocol {

struct Space {
  enum class Kind { Box, Discrete, MultiDiscrete, MultiBinary, Tuple, Dict, Text, Sequence, Graph, OneOf, Unsupported };
  Kind kind = Kind::Unsupported;

  // Box and MultiDiscrete
  DType dtype = DType::Float32;
  std::vector<uint64_t> shape;
  Tensor low, high;     // Box
  Tensor nvec, mstart;  // MultiDiscrete
  // Discrete
  int64_t n = 0;
  int64_t start = 0;
  // MultiBinary
  std::vector<int64_t> binary_shape;
  // Tuple, Dict and OneOf: the subspaces; Sequence: its feature space; Graph: its node space and,
  // when it has one, its edge space
  std::vector<Space> spaces;
  bool stack = false;  // Sequence
  std::vector<std::string> keys;
  // Text
  int64_t min_length = 0;
  int64_t max_length = 0;
  std::string charset;
  // Unsupported
  std::string repr;

  Value to_value() const;
  static std::optional<Space> from_value(const Value& v, std::string& err);
  bool operator==(const Space&) const = default;

  // Whether a value lies in the space (Box bounds, Discrete range, nested containers).
  bool contains(const Value& v) const;
};

std::string_view to_string(Space::Kind k);

}  // namespace gymfarm::protocol
