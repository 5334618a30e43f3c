#include "frontends/gymie.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <regex>

#include "frontends/pyjson.hpp"
#include "protocol/error.hpp"

namespace gymfarm::frontends {

using protocol::ErrorCode;
using protocol::Value;

void GymieInstances::made(const std::string& instance, std::string owner, std::optional<uint64_t> seed) {
  std::lock_guard lock(mu_);
  entries_[instance] = Entry{std::move(owner), seed};
}

std::optional<uint64_t> GymieInstances::take_seed(const std::string& instance) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(instance);
  if (it == entries_.end()) return std::nullopt;
  return std::exchange(it->second.seed, std::nullopt);
}

void GymieInstances::closed(const std::string& instance) {
  std::lock_guard lock(mu_);
  entries_.erase(instance);
}

std::map<std::string, std::string> GymieInstances::owners() const {
  std::lock_guard lock(mu_);
  std::map<std::string, std::string> out;
  for (const auto& [id, e] : entries_) out.emplace(id, e.owner);
  return out;
}

namespace {

constexpr uint16_t kUnsupported = 1003;
constexpr uint16_t kInvalid = 1007;

GymieOutcome reply(std::string text) { return {false, 1000, std::move(text)}; }
GymieOutcome close_with(uint16_t code, std::string reason) { return {true, code, std::move(reason)}; }

struct Method {
  std::string_view name;
  std::vector<std::string_view> required;
  std::vector<std::string_view> optional;
  bool open = false;  // make: extra params go to the operator's get_env
};

const std::vector<Method>& methods() {
  static const std::vector<Method> m{
      {"make", {"env_id"}, {"seed"}, true},
      {"step", {"instance_id", "action"}, {"render"}, false},
      {"reset", {"instance_id"}, {}, false},
      {"close", {"instance_id"}, {}, false},
      {"observation_space", {"instance_id"}, {}, false},
      {"action_space", {"instance_id"}, {}, false},
      {"action_sample", {"instance_id"}, {}, false},
  };
  return m;
}

bool params_fit(const Method& m, const Json& params) {
  for (auto r : m.required) {
    if (!params.contains(std::string(r))) return false;
  }
  if (m.open) return true;
  for (const auto& [k, v] : params.items()) {
    const bool known = std::find(m.required.begin(), m.required.end(), k) != m.required.end() ||
                       std::find(m.optional.begin(), m.optional.end(), k) != m.optional.end();
    if (!known) return false;
  }
  return true;
}

// Box bounds: ±inf becomes ±(largest finite value of the Box dtype), as gym 0.17 reported them.
Value finite_bounds(const Value& bound, const std::string& dtype) {
  if (!bound.is_tensor()) return bound;
  const auto& t = bound.as_tensor();
  const double big = dtype == "float16"   ? 65504.0
                     : dtype == "float32" ? static_cast<double>(std::numeric_limits<float>::max())
                                          : std::numeric_limits<double>::max();
  protocol::Tensor out{protocol::DType::Float64, t.shape, {}};
  out.data.resize(t.elements() * sizeof(double));
  for (std::size_t i = 0; i < t.elements(); ++i) {
    double x = t.as_double(i);
    if (std::isinf(x)) x = x > 0 ? big : -big;
    std::memcpy(out.data.data() + i * sizeof(double), &x, sizeof x);
  }
  return Value(std::move(out));
}

std::string farm_error_text(const client::ClientError& e) {
  const Value* m = e.error().details.find("message");
  return (m && m->is_string()) ? m->as_string() : e.error().message;
}

}  // namespace

std::string gymie_space_info(const Value& space, bool raw_infinity) {
  const Value* type = space.find("type");
  const std::string name = type && type->is_string() ? type->as_string() : "Unknown";
  Value info(protocol::Map{{"name", name}});
  if (name == "Discrete") {
    info.set("n", *space.find("n"));
  } else if (name == "Box") {
    const std::string dtype = space.find("dtype")->as_string();
    info.set("shape", *space.find("shape"));
    info.set("low", raw_infinity ? *space.find("low") : finite_bounds(*space.find("low"), dtype));
    info.set("high", raw_infinity ? *space.find("high") : finite_bounds(*space.find("high"), dtype));
  } else if (name == "MultiBinary") {
    const Value& n = *space.find("n");
    info.set("n", n);
    info.set("shape", n.is_array() ? n : Value(protocol::Array{n}));
  }
  return to_json(info);
}

bool GymieSession::is_step(std::string_view message, std::size_t max_depth) {
  if (json_depth(message) > max_depth) return false;
  const Json data = Json::parse(message, nullptr, false);
  if (data.is_discarded() || !data.is_object()) return false;
  const auto m = data.find("method");
  return m != data.end() && m->is_string() && *m == "step";
}

GymieOutcome GymieSession::handle(std::string_view message, client::Caller* via) {
  client::Caller& farm = via ? *via : farm_;
  const std::string raw(message);
  if (json_depth(message) > opt_.max_depth) {
    return close_with(kUnsupported, truncate_utf8("Message `" + raw + "` is invalid", 123));
  }
  Json data = Json::parse(message, nullptr, false);
  if (data.is_discarded() || !data.is_object()) {
    return close_with(kUnsupported, truncate_utf8("Message `" + raw + "` is invalid", 123));
  }
  if (!data.contains("method") || !data.contains("params")) {
    Json keys = Json::array();
    for (const auto& [k, v] : data.items()) keys.push_back(k);
    return close_with(kUnsupported, truncate_utf8("Message keys " + py_repr(keys) + " are missing or invalid", 123));
  }
  const Json& params = data["params"];
  const std::string method = py_str(data["method"]);
  auto wrong_params = [&] {
    return close_with(kInvalid, truncate_utf8("Parameters `" + py_repr(params) + "` are wrong", 123));
  };
  const Method* m = nullptr;
  if (data["method"].is_string()) {
    for (const auto& x : methods()) {
      if (x.name == method) m = &x;
    }
  }
  if (!m) return close_with(kInvalid, truncate_utf8("Method `" + method + "` not found", 123));
  if (!params.is_object() || !params_fit(*m, params)) return wrong_params();

  const std::string instance = params.contains("instance_id") ? py_str(params["instance_id"]) : "";
  auto not_found = [&] { return close_with(kInvalid, truncate_utf8("Instance `" + instance + "` not found", 123)); };
  auto unknown = [&](const std::string& what) {
    return close_with(kInvalid, truncate_utf8("Unknonwn error: " + what, 123));
  };
  if (params.contains("instance_id") && !params["instance_id"].is_string()) return not_found();

  try {
    if (m->name == "make") {
      const Json& env_id = params["env_id"];
      const std::string id = py_str(env_id);
      std::optional<uint64_t> seed;
      if (params.contains("seed") && !params["seed"].is_null()) {
        // Gymnasium seeds are non-negative ints; the farm carries 0..2**64-1 (JSON parses those unsigned)
        if (!params["seed"].is_number_unsigned()) return wrong_params();
        seed = params["seed"].get<uint64_t>();
      }
      Value kwargs(protocol::Map{});
      for (const auto& [k, v] : params.items()) {
        if (k != "env_id" && k != "seed") kwargs.set(k, from_json(v));
      }
      static const std::regex kWellFormed(R"(^(?:[\w:-]+\/)?([\w:.-]+)-v(\d+)$)");
      if (!env_id.is_string()) return close_with(kInvalid, truncate_utf8("Environment `" + id + "` is malformed", 123));
      Value body(protocol::Map{{"env_id", id}, {"kwargs", kwargs}, {"strict", true}});
      try {
        const Value r = farm.call("make", {}, body);
        const std::string iid = r.find("instance_id")->as_string();
        owned_.push_back(iid);
        // Gymie ignores a seed of 0
        instances_.made(iid, owner_, seed && *seed != 0 ? seed : std::nullopt);
        return reply(iid);
      } catch (const client::ClientError& e) {
        if (e.code() != ErrorCode::BadRequest) throw;
        const Value* kind = e.error().details.find("kind");
        const std::string k = kind && kind->is_string() ? kind->as_string() : "";
        if (k == "params") return wrong_params();
        if (k == "not_found" && std::regex_match(id, kWellFormed)) {
          return close_with(kInvalid, truncate_utf8("Environment `" + id + "` not found", 123));
        }
        if (k == "not_found" || k == "malformed") {
          return close_with(kInvalid, truncate_utf8("Environment `" + id + "` is malformed", 123));
        }
        throw;
      }
    }
    if (m->name == "reset") {
      Value body(protocol::Map{});
      if (auto s = instances_.take_seed(instance)) {
        body.set("seed", *s <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                             ? Value(static_cast<int64_t>(*s))
                             : Value(*s));
      }
      const Value r = farm.call("reset", instance, body);
      return reply(to_json(*r.find("obs")));
    }
    if (m->name == "step") {
      const Json& action = params["action"];
      Value body(protocol::Map{{"action", from_json(action)}, {"processed", true}});
      Value r;
      try {
        r = farm.call("step", instance, body);
      } catch (const client::ClientError& e) {
        if (e.code() == ErrorCode::BadAction || e.code() == ErrorCode::EnvError) {
          return close_with(kInvalid, truncate_utf8("Action `" + py_str(action) + "` is wrong", 123));
        }
        throw;
      }
      if (const Value* p = r.find("processed")) return reply(to_json(*p));
      const bool terminated = r.find("terminated")->as_bool(), truncated = r.find("truncated")->as_bool();
      const bool done = terminated || truncated;
      Value info = *r.find("info");
      // gym's TimeLimit, which Gymie's clients knew, said why an episode ended at its step limit
      if (truncated && !terminated && info.is_map()) info.set("TimeLimit.truncated", true);
      // Rewards are floats in Gym's API, and gym 0.17 envs (FrozenLake, Taxi) returned floats, so the
      // dialect writes 0.0 even when a Gymnasium env returns the int 0.
      const Value& rv = *r.find("reward");
      const double reward = rv.is_tensor() ? rv.as_tensor().as_double(0) : rv.is_number() ? rv.as_double() : 0.0;
      protocol::Array out{*r.find("obs"), reward, done, std::move(info)};
      return reply(to_json(Value(std::move(out))));
    }
    if (m->name == "close") {
      try {
        farm.call("close", instance);
      } catch (const client::ClientError& e) {
        if (e.code() == ErrorCode::UnknownInstance) instances_.closed(instance);  // crashed: nothing left to show
        throw;
      }
      owned_.erase(std::remove(owned_.begin(), owned_.end(), instance), owned_.end());
      instances_.closed(instance);
      return reply("true");
    }
    if (m->name == "observation_space" || m->name == "action_space") {
      const Value r = farm.call("spaces", instance);
      return reply(gymie_space_info(*r.find(std::string(m->name)), opt_.raw_infinity));
    }
    // action_sample
    const Value r = farm.call("sample", instance, Value(protocol::Map{{"space", "action"}}));
    return reply(to_json(*r.find("value")));
  } catch (const client::ClientError& e) {
    if (e.code() == ErrorCode::UnknownInstance) return not_found();
    return unknown(farm_error_text(e));
  } catch (const std::exception& e) {
    return unknown(e.what());
  }
}

void GymieSession::disconnected() {
  if (opt_.shared_instances) return;
  for (const auto& id : owned_) {
    try {
      farm_.call("close", id);
    } catch (const std::exception&) {
      // already gone (crashed, closed elsewhere)
    }
    instances_.closed(id);
  }
  owned_.clear();
}

}  // namespace gymfarm::frontends
