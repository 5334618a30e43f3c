#pragma once
// A worker's share of a step_vec (docs/protocol.md "Vector step"): the body the broker sends each
// worker, {instances, actions (its rows), autoreset?}. A local client may post the same body in a
// slab of those envs (docs/protocol.md "Shared memory"); the worker then runs the share re-encoded
// from what it checked, so that what runs is exactly what was checked (a map that names a key
// twice, say, cannot show the check one list and the env loop another).
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/value.hpp"

namespace gymfarm::protocol {

struct VecShare {
  std::vector<std::string> instances;
  Tensor actions;  // one row per instance
  std::optional<Value> autoreset;
};

// The share's body as the broker encodes it for a worker.
std::string encode_vec_share(const std::vector<std::string>& instances, Tensor actions, const Value* autoreset);

// A share posted in a slab: nullopt unless the body is a map with `instances` (a non-empty array of
// strings) and `actions` (an ndarray with one row per instance, as the broker requires of a step_vec).
std::optional<VecShare> decode_vec_share(std::string_view body);

}  // namespace gymfarm::protocol
