#include "protocol/step_vec.hpp"

#include <utility>

#include "protocol/codec.hpp"

namespace gymfarm::protocol {

std::string encode_vec_share(const std::vector<std::string>& instances, Tensor actions, const Value* autoreset) {
  Array names;
  names.reserve(instances.size());
  for (const auto& i : instances) names.push_back(Value(i));
  Value share(Map{{"instances", Value(std::move(names))}, {"actions", Value(std::move(actions))}});
  if (autoreset != nullptr) share.set("autoreset", *autoreset);
  return encode(share);
}

std::optional<VecShare> decode_vec_share(std::string_view body) {
  Value req;
  std::string err;
  if (!decode(body, req, err) || !req.is_map()) return std::nullopt;
  const Value* insts = req.find("instances");
  const Value* actions = req.find("actions");
  if (insts == nullptr || !insts->is_array() || insts->as_array().empty() || actions == nullptr ||
      !actions->is_tensor())
    return std::nullopt;
  VecShare share;
  for (const auto& v : insts->as_array()) {
    if (!v.is_string()) return std::nullopt;
    share.instances.push_back(v.as_string());
  }
  share.actions = actions->as_tensor();
  if (share.actions.shape.empty() || share.actions.shape[0] != share.instances.size()) return std::nullopt;
  if (const Value* a = req.find("autoreset")) share.autoreset = *a;
  return share;
}

}  // namespace gymfarm::protocol
