#include "frontends/rest.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "frontends/access.hpp"
#include "frontends/png.hpp"
#include "frontends/pyjson.hpp"
#include "protocol/error.hpp"
#include "protocol/token.hpp"

namespace gymfarm::frontends {

using protocol::ErrorCode;
using protocol::Value;
namespace fs = std::filesystem;

HttpReply json_reply(int status, const protocol::Value& v) {
  HttpReply r;
  r.status = status;
  r.body = to_json(v, kFlaskStyle) + "\n";
  return r;
}

// ---- registry ----------------------------------------------------------------------------------

void RestRegistry::set_seed_used(const std::string& id) {
  update(id, [](Entry& e) { e.seed.reset(); });
}

std::vector<std::pair<std::string, std::string>> RestRegistry::list() {
  std::vector<std::pair<std::string, std::string>> out;
  for_each([&](const std::string& id, const Entry& e) { out.emplace_back(id, e.env_id); });
  return out;
}

// gym Monitor's manifest lists its videos as [video, metadata] pairs: the worker's `videos` (rest.hpp).
protocol::Array video_pairs(const Value* videos) {
  protocol::Array out;
  if (!videos || !videos->is_array()) return out;
  for (const Value& v : videos->as_array()) {
    const Value* file = v.find("file");
    const Value* meta = v.find("meta");
    if (file && file->is_string() && meta && meta->is_string()) out.emplace_back(protocol::Array{*file, *meta});
  }
  return out;
}

// ---- the route table ----------------------------------------------------------------------------

namespace {

enum class Op {
  Create,
  List,
  EnvInfo,
  Delete,
  Reset,
  Step,
  ActionSpace,
  Sample,
  Contains,
  ObsSpace,
  ObsContains,
  MonitorStart,
  MonitorClose,
  Close,
  Upload,
  Shutdown,
  Render,
  Transitions,
  Episodes,
  RenderPng,
  Help,
  OpenApi,
};

constexpr int kOpenai = 1, kGymnasium = 2, kBoth = 3;

struct Ctx;
using Handler = HttpReply (*)(Ctx&);

// Whether a route reads a JSON body (parsed, and its parameters checked, before the instance id).
enum class Body { None, Json, GymnasiumJson };

struct Route {
  int dialects;
  const char* method;
  std::vector<std::string> pattern;  // "*" = instance id, "#" = a value
  Op op;
  Body body;
  Handler handler;
  const char* doc;
};

const std::vector<Route>& routes();

std::vector<std::string> split_path(const std::string& target) {
  std::string path = target.substr(0, target.find('?'));
  std::vector<std::string> segs;
  std::size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    std::size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    if (j > i) segs.push_back(path.substr(i, j - i));
    i = j;
  }
  return segs;
}

bool matches(const Route& r, const std::vector<std::string>& segs, std::string& id, std::string& value) {
  if (r.pattern.size() != segs.size()) return false;
  for (std::size_t i = 0; i < segs.size(); ++i) {
    if (r.pattern[i] == "*") id = segs[i];
    else if (r.pattern[i] == "#") value = segs[i];
    else if (r.pattern[i] != segs[i]) return false;
  }
  return true;
}

std::string pattern_path(const Route& r, bool slash) {
  std::string p;
  for (const auto& s : r.pattern)
    p += "/" + (s == "*" ? std::string("{instance_id}") : s == "#" ? std::string("{x}") : s);
  if (slash && r.op != Op::OpenApi && r.op != Op::RenderPng) p += "/";
  return p;
}

// ---- replies ----------------------------------------------------------------------------------

HttpReply message(int status, const std::string& text) {
  return json_reply(status, Value(protocol::Map{{"message", text}}));
}

HttpReply empty(int status) {
  HttpReply r;
  r.status = status;
  r.content_type.clear();
  return r;
}

struct Fail {
  HttpReply reply;
};

// ---- request bodies (gym-http-api's get_required_param / get_optional_param) -------------------

std::optional<Json> parse_json(const HttpRequest& req) {
  if (req.body.empty()) return std::nullopt;
  if (json_depth(req.body) > 64) throw Fail{message(400, "Request JSON is nested too deeply")};
  Json j = Json::parse(req.body, nullptr, false);
  if (j.is_discarded()) throw Fail{message(400, "Request is not a valid json")};
  if (j.is_null()) return std::nullopt;
  return j;
}

bool empty_value(const Json& v) {
  return v.is_null() || (v.is_string() && v.get<std::string>().empty()) || (v.is_array() && v.empty());
}

const Json& object_or_fail(const std::optional<Json>& j) {
  if (!j || !j->is_object()) throw Fail{message(400, "Request is not a valid json")};
  return *j;
}

Json required(const std::optional<Json>& j, const std::string& p) {
  const Json& o = object_or_fail(j);
  if (!o.contains(p) || empty_value(o[p])) {
    throw Fail{message(400, "A required request parameter '" + p + "' was not provided")};
  }
  return o[p];
}

std::optional<Json> optional_param(const std::optional<Json>& j, const std::string& p) {
  const Json& o = object_or_fail(j);
  if (!o.contains(p) || empty_value(o[p])) return std::nullopt;
  return o[p];
}

// ---- value shaping ------------------------------------------------------------------------------

double widen(const Value& v) {
  if (v.is_tensor()) return v.as_tensor().as_double(0);
  return v.is_number() ? v.as_double() : 0.0;
}

bool is_float_dtype(protocol::DType d) {
  return d == protocol::DType::Float16 || d == protocol::DType::Float32 || d == protocol::DType::Float64;
}

Value flat_bounds(const Value& bound, double inf_as) {
  protocol::Array out;
  if (!bound.is_tensor()) return Value(out);
  const auto& t = bound.as_tensor();
  for (std::size_t i = 0; i < t.elements(); ++i) {
    const double x = t.as_double(i);
    if (!is_float_dtype(t.dtype)) out.emplace_back(static_cast<int64_t>(x));
    else if (std::isinf(x)) out.emplace_back(x > 0 ? inf_as : -inf_as);
    else out.emplace_back(x);
  }
  return Value(std::move(out));
}

Value space_info(const Value& space, double inf_as) {
  const Value* type = space.find("type");
  const std::string name = type && type->is_string() ? type->as_string() : "Unknown";
  Value info(protocol::Map{{"name", name}});
  if (name == "Discrete") {
    info.set("n", *space.find("n"));
  } else if (name == "Box") {
    info.set("shape", *space.find("shape"));
    info.set("low", flat_bounds(*space.find("low"), inf_as));
    info.set("high", flat_bounds(*space.find("high"), inf_as));
  } else if (name == "Tuple") {
    protocol::Array subs;
    for (const auto& s : space.find("spaces")->as_array()) subs.push_back(space_info(s, inf_as));
    info.set("n", static_cast<int64_t>(subs.size()));
    info.set("spaces", std::move(subs));
  }
  return info;
}

std::string zlib_compress(std::string_view in) {
  uLongf size = compressBound(static_cast<uLong>(in.size()));
  std::string out(size, '\0');
  compress(reinterpret_cast<Bytef*>(out.data()), &size, reinterpret_cast<const Bytef*>(in.data()),
           static_cast<uLong>(in.size()));
  out.resize(size);
  return out;
}

template <class T>
std::string bytes_of(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// gymnasium-http-api's observation encoding: {"type": dtype, "data": base64(zlib(bytes))}.
Value encode_observation(const Value& obs) {
  const Value& v = obs.is_array() && !obs.as_array().empty() ? obs.as_array()[0] : obs;  // a tuple keeps element 0
  std::string type, raw;
  if (v.is_bool()) {
    type = "bool";
    raw = std::string(1, v.as_bool() ? '\1' : '\0');
  } else if (v.is_int()) {
    type = "int64";
    raw = bytes_of(std::vector<int64_t>{v.as_int()});
  } else if (v.is_float()) {
    type = "float64";
    raw = bytes_of(std::vector<double>{v.as_double()});
  } else if (v.is_tensor()) {
    const auto& t = v.as_tensor();
    using protocol::DType;
    if (t.dtype == DType::Float32 || t.dtype == DType::Float16) {
      std::vector<double> d(t.elements());
      for (std::size_t i = 0; i < d.size(); ++i) d[i] = t.as_double(i);
      type = "float64";
      raw = bytes_of(d);
    } else if (t.dtype == DType::Int32 || t.dtype == DType::UInt8 || t.dtype == DType::Int16 ||
               t.dtype == DType::UInt16) {
      std::vector<int64_t> d(t.elements());
      for (std::size_t i = 0; i < d.size(); ++i) d[i] = static_cast<int64_t>(t.as_double(i));
      type = "int64";
      raw = bytes_of(d);
    } else {
      type = protocol::dtype_name(t.dtype);
      raw = t.data;
    }
  } else {
    throw Fail{message(500, "this observation cannot be encoded in the gymnasium-http-api format")};
  }
  return Value(protocol::Map{{"type", type}, {"data", base64_encode(zlib_compress(raw))}});
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A client-chosen monitor directory, mapped inside the operator's directory: plain name segments only.
std::string monitor_path(const std::string& root, const std::string& requested) {
  std::string rel;
  for (const auto& seg : split_path(requested)) {
    if (seg == "." || seg == "..") continue;
    std::string clean;
    for (char c : seg)
      clean += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
    rel += (rel.empty() ? "" : "/") + clean;
  }
  return root + "/" + (rel.empty() ? "default" : rel);
}

void write_monitor(const std::string& id, const RestRegistry::Entry& e, const Value* videos) {
  const auto& m = e.monitor;
  std::error_code ec;
  fs::create_directories(m.directory, ec);
  protocol::Array rewards, lengths, stamps, types;
  for (double r : m.rewards) rewards.emplace_back(r);
  for (auto l : m.lengths) lengths.emplace_back(l);
  for (double t : m.timestamps) stamps.emplace_back(t);
  for (std::size_t i = 0; i < m.rewards.size(); ++i) types.emplace_back("t");
  Value stats(protocol::Map{{"initial_reset_timestamp", m.started},
                            {"timestamps", stamps},
                            {"episode_lengths", lengths},
                            {"episode_rewards", rewards},
                            {"episode_types", types}});
  const std::string stats_name = "openaigym.episode_batch." + id + ".stats.json";
  std::ofstream(m.directory + "/" + stats_name) << to_json(stats);
  Value manifest(protocol::Map{{"stats", stats_name},
                               {"videos", video_pairs(videos)},
                               {"env_info", Value(protocol::Map{{"env_id", e.env_id}, {"gym_version", "gymfarm"}})}});
  std::ofstream(m.directory + "/openaigym.manifest." + id + ".manifest.json") << to_json(manifest);
}

std::string png_of(const protocol::Tensor& t) {
  if (t.dtype != protocol::DType::UInt8 || t.shape.size() != 3 || (t.shape[2] != 3 && t.shape[2] != 4)) {
    throw Fail{message(400, "the env's frame is not an RGB image")};
  }
  auto png = encode_png(t);
  if (!png) throw Fail{message(500, "PNG encoding failed")};
  return std::move(*png);
}

// Python's int(x) for a path segment.
std::optional<int64_t> py_int(const std::string& s) {
  std::size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  std::string t = s.substr(b, e - b);
  if (t.empty()) return std::nullopt;
  std::size_t i = (t[0] == '+' || t[0] == '-') ? 1 : 0;
  if (i == t.size()) return std::nullopt;
  for (std::size_t k = i; k < t.size(); ++k) {
    if (!std::isdigit(static_cast<unsigned char>(t[k]))) return std::nullopt;
  }
  try {
    return std::stoll(t);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// ---- one request: the shared steps -------------------------------------------------------------

HttpReply unknown_id(const std::string& id) { return message(400, "Instance_id " + id + " unknown"); }

struct Ctx {
  client::Caller& farm;
  RestRegistry& reg;
  const RestOptions& opt;
  const HttpRequest& req;
  int mask;           // kOpenai or kGymnasium
  bool openai;        // gym-http-api
  double inf_as;      // what ±inf Box bounds become
  std::string id;     // the {instance_id} segment
  std::string value;  // the {x} segment
  std::optional<Json> body;
  std::optional<RestRegistry::Entry> found;

  // The instance the path names (a snapshot); the dialect's unknown-id reply when there is none.
  const RestRegistry::Entry& entry() {
    if (!found) found = reg.get(id);
    if (!found) throw Fail{unknown_id(id)};
    return *found;
  }
  const std::string& instance() { return entry().instance; }
  bool client_gone() const { return req.client_gone && req.client_gone(); }
};

// Python's int(x) for a string, unsigned: digits with an optional '+', surrounding whitespace.
std::optional<uint64_t> py_uint(const std::string& s) {
  auto v = py_int(s);
  if (v && *v >= 0) return static_cast<uint64_t>(*v);
  std::size_t b = s.find_first_not_of(" \t\n\r\f\v"), e = s.find_last_not_of(" \t\n\r\f\v");
  if (b == std::string::npos) return std::nullopt;
  std::string t = s.substr(b, e - b + 1);
  if (!t.empty() && t[0] == '+') t.erase(0, 1);
  while (t.size() > 1 && t[0] == '0') t.erase(0, 1);
  if (t.empty() || t.size() > 20 || t.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  errno = 0;
  const unsigned long long x = std::strtoull(t.c_str(), nullptr, 10);
  if (errno == ERANGE) return std::nullopt;
  return static_cast<uint64_t>(x);
}

// A seed as Gymnasium takes it (a non-negative int), within what the farm carries (0..2**64-1);
// gymnasium-http-api also takes a numeric string. Anything else is the dialect's 400.
uint64_t seed_of(const Json& s, bool strings) {
  if (s.is_number_unsigned()) return s.get<uint64_t>();
  if (s.is_string() && strings) {
    if (auto v = py_uint(s.get<std::string>())) return *v;
  }
  throw Fail{message(
      400, std::string("'seed' must be an integer from 0 to 2**64-1") + (strings ? " (or its decimal string)" : ""))};
}

// The protocol's int or uint for a seed.
Value seed_value(uint64_t s) {
  return s <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? Value(static_cast<int64_t>(s)) : Value(s);
}

// An integer parameter as the originals read it: a JSON int or a numeric string.
std::optional<int64_t> int_param(const Json& j) {
  if (j.is_number_integer() &&
      !(j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))) {
    return j.get<int64_t>();
  }
  if (j.is_string()) return py_int(j.get<std::string>());
  return std::nullopt;
}

// ---- one handler per operation ------------------------------------------------------------------

HttpReply on_create(Ctx& c) {
  const Json env_id = required(c.body, "env_id");
  Value kwargs(protocol::Map{});
  std::optional<uint64_t> seed;
  if (c.openai) {
    if (auto s = optional_param(c.body, "seed")) {
      if (const uint64_t v = seed_of(*s, false); v != 0) seed = v;  // `if seed:` as in the original
    }
  } else {
    if (auto k = optional_param(c.body, "kwargs")) {
      if (!k->is_object()) return message(400, "'kwargs' must be an object");
      kwargs = from_json(*k);
    }
    if (auto m = optional_param(c.body, "max_episode_steps")) kwargs.set("max_episode_steps", from_json(*m));
    if (auto a = optional_param(c.body, "auto_reset")) kwargs.set("autoreset", from_json(*a));
    if (auto d = optional_param(c.body, "disable_env_checker")) kwargs.set("disable_env_checker", from_json(*d));
  }
  const std::string env = py_str(env_id);
  auto make = [&](const Value& kw) {
    return c.farm.call("make", {}, Value(protocol::Map{{"env_id", env}, {"kwargs", kw}}));
  };
  Value r;
  try {
    if (c.openai) {
      // gym's envs rendered rgb_array whenever asked, and its Monitor recorded video by default;
      // Gymnasium fixes the render mode at make, so gym-http-api envs are made with
      // render_mode="rgb_array" (docs/dialects.md). An env that refuses it is made plainly.
      try {
        r = make(Value(protocol::Map{{"render_mode", "rgb_array"}}));
      } catch (const client::ClientError& e) {
        if (e.code() != ErrorCode::BadRequest && e.code() != ErrorCode::EnvError) throw;
        r = make(kwargs);
      }
    } else {
      r = make(kwargs);
    }
  } catch (const client::ClientError& e) {
    if (e.code() == ErrorCode::BadRequest || e.code() == ErrorCode::EnvError) {
      return message(400, "Attempted to look up malformed environment ID '" + env + "'");
    }
    throw;
  }
  RestRegistry::Entry entry;
  entry.instance = r.find("instance_id")->as_string();
  entry.env_id = env;
  const Value* spec = r.find("spec");
  const Value* sid = spec ? spec->find("id") : nullptr;
  entry.spec_id = sid && sid->is_string() ? sid->as_string() : env;
  entry.seed = seed;
  return json_reply(200, Value(protocol::Map{{"instance_id", c.reg.add(std::move(entry))}}));
}

HttpReply on_list(Ctx& c) {
  protocol::Map all;
  for (auto& [k, v] : c.reg.list()) all.emplace_back(k, v);
  return json_reply(200, Value(protocol::Map{{"all_envs", Value(std::move(all))}}));
}

HttpReply on_help(Ctx& c) {
  Value rules(protocol::Map{});
  for (const auto& r : routes()) {
    if (!(r.dialects & c.mask)) continue;
    const std::string path = pattern_path(r, true);
    if (const Value* seen = rules.find(path)) {  // one rule, several methods (as Flask lists them)
      rules.set(path, Value(protocol::Map{{"methods", seen->find("methods")->as_string() + "," + r.method},
                                          {"doc", seen->find("doc")->as_string() + " / " + r.doc}}));
    } else {
      rules.set(path, Value(protocol::Map{{"methods", std::string(r.method)}, {"doc", r.doc}}));
    }
  }
  return json_reply(200, Value(protocol::Map{{"v1", rules}}));
}

HttpReply on_openapi(Ctx& c) {
  HttpReply r;
  r.body = openapi_document(c.openai ? RestDialect::GymHttpApi : RestDialect::GymnasiumHttpApi);
  return r;
}

HttpReply on_upload(Ctx& c) {
  required(c.body, "training_dir");
  required(c.body, "api_key");
  return empty(204);
}

HttpReply on_shutdown(Ctx& c) {
  if (!c.opt.allow_shutdown) return message(403, "shutdown is disabled; start the farm with --allow-shutdown");
  HttpReply r;
  r.content_type = "text/html; charset=utf-8";
  r.body = "Server shutting down";
  r.shutdown = true;
  return r;
}

HttpReply on_env_info(Ctx& c) { return json_reply(200, Value(protocol::Map{{"id", c.entry().spec_id}})); }

HttpReply on_close(Ctx& c) {
  try {
    c.farm.call("close", c.instance());
  } catch (const client::ClientError&) {
    // a crashed instance is gone all the same
  }
  c.reg.remove(c.id);
  return c.openai ? empty(204) : empty(200);  // POST .../close/ (gym-http-api) or DELETE (gymnasium-http-api)
}

HttpReply on_reset(Ctx& c) {
  Value b(protocol::Map{});
  std::optional<uint64_t> seed;
  if (!c.openai) {
    if (auto s = optional_param(c.body, "seed")) seed = seed_of(*s, true);
  }
  const auto& entry = c.entry();
  if (c.openai && entry.seed) {
    b.set("seed", seed_value(*entry.seed));
    c.reg.set_seed_used(c.id);
  }
  if (seed) b.set("seed", seed_value(*seed));
  const Value r = c.farm.call("reset", entry.instance, b);
  c.reg.update(c.id, [](RestRegistry::Entry& e) {
    if (e.monitor.active && e.monitor.started == 0.0) e.monitor.started = now_seconds();
    e.monitor.episode_reward = 0.0;
    e.monitor.episode_length = 0;
  });
  return json_reply(
      200, Value(protocol::Map{{"observation", c.openai ? *r.find("obs") : encode_observation(*r.find("obs"))}}));
}

HttpReply on_step(Ctx& c) {
  const Json action = required(c.body, "action");
  if (c.openai) (void)optional_param(c.body, "render");  // accepted and ignored: no window to draw in
  const std::string& inst = c.instance();
  Value a = from_json(action);
  if (a.is_bool()) a = Value(int64_t{a.as_bool() ? 1 : 0});  // Python's bool is an int
  Value r;
  try {
    r = c.farm.call("step", inst, Value(protocol::Map{{"action", a}}));
  } catch (const client::ClientError& e) {
    if (e.code() == ErrorCode::BadAction) return message(500, "invalid action: " + e.error().message);
    throw;
  }
  const double reward = widen(*r.find("reward"));
  const bool terminated = r.find("terminated")->as_bool(), truncated = r.find("truncated")->as_bool();
  Value info = *r.find("info");
  if (!info.is_map()) info = Value(protocol::Map{});
  c.reg.update(c.id, [&](RestRegistry::Entry& e) {
    auto& m = e.monitor;
    if (!m.active) return;
    m.episode_reward += reward;
    m.episode_length += 1;
    if (terminated || truncated) {
      m.rewards.push_back(m.episode_reward);
      m.lengths.push_back(m.episode_length);
      m.timestamps.push_back(now_seconds());
      m.episode_reward = 0.0;
      m.episode_length = 0;
    }
  });
  if (c.openai) {
    if (truncated && !terminated) info.set("TimeLimit.truncated", true);
    return json_reply(
        200,
        Value(protocol::Map{
            {"observation", *r.find("obs")}, {"reward", reward}, {"done", terminated || truncated}, {"info", info}}));
  }
  return json_reply(200, Value(protocol::Map{{"observation", encode_observation(*r.find("obs"))},
                                             {"reward", reward},
                                             {"terminated", terminated},
                                             {"truncated", truncated},
                                             {"info", info}}));
}

HttpReply space_reply(Ctx& c, const char* which) {
  const Value r = c.farm.call("spaces", c.instance());
  return json_reply(200, Value(protocol::Map{{"info", space_info(*r.find(which), c.inf_as)}}));
}
HttpReply on_action_space(Ctx& c) { return space_reply(c, "action_space"); }
HttpReply on_obs_space(Ctx& c) { return space_reply(c, "observation_space"); }

HttpReply on_sample(Ctx& c) {
  const Value r = c.farm.call("sample", c.instance(), Value(protocol::Map{{"space", "action"}}));
  return json_reply(200, Value(protocol::Map{{"action", *r.find("value")}}));
}

HttpReply on_contains(Ctx& c) {
  const std::string& inst = c.instance();
  auto x = py_int(c.value);
  if (!x) return message(500, "invalid literal for int() with base 10: '" + c.value + "'");
  const Value r = c.farm.call("spaces", inst);
  std::string err;
  auto space = protocol::Space::from_value(*r.find("action_space"), err);
  return json_reply(200, Value(protocol::Map{{"member", space && space->contains(Value(*x))}}));
}

HttpReply on_obs_contains(Ctx& c) {
  const std::string& inst = c.instance();
  if (!c.body || !c.body->is_object()) return message(500, "the body must be a JSON object of space properties");
  const Value r = c.farm.call("spaces", inst);
  const Value info = space_info(*r.find("observation_space"), c.inf_as);
  bool member = true;
  for (const auto& [k, v] : c.body->items()) {
    const Value* mine = info.find(k);
    if (!mine) return message(500, "the observation space has no property '" + k + "'");
    member = member && to_json(*mine) == to_json(from_json(v));
  }
  return json_reply(200, Value(protocol::Map{{"member", member}}));
}

// gym-http-api's `video_callable`: absent or null is gym Monitor's default (the capped cubic
// schedule), false no video, true every episode, an integer N >= 1 every Nth (as its server made
// it: `count % N == 0`). Anything else is a 400 (the original raised on it, or divided by zero).
Value video_schedule(const std::optional<Json>& body) {
  const Json& o = object_or_fail(body);
  if (!o.contains("video_callable") || o["video_callable"].is_null()) return Value("cubic");
  const Json& v = o["video_callable"];
  if (v.is_boolean()) return v.get<bool>() ? Value(int64_t{1}) : Value(false);
  if (auto n = int_param(v); n && *n >= 1 && !v.is_string()) return Value(*n);
  throw Fail{message(400, "'video_callable' must be false, true or an integer of at least 1")};
}

// Asks the instance's worker to record videos into the body's directory (absolute, canonical,
// inside the operator's directory: the worker refuses anything else); its refusals are 400s.
Value monitor_call(Ctx& c, const Value& body) {
  try {
    return c.farm.call("monitor", c.instance(), body);
  } catch (const client::ClientError& e) {
    if (e.code() == ErrorCode::BadRequest) throw Fail{message(400, e.error().message)};
    throw;
  }
}

HttpReply on_monitor_start(Ctx& c) {
  const Json directory = required(c.body, "directory");
  if (!directory.is_string()) return message(400, "'directory' must be a string");
  const Value video = video_schedule(c.body);
  c.entry();
  const std::string dir = monitor_path(c.opt.monitor_dir, py_str(directory));
  const bool force = optional_param(c.body, "force").value_or(Json(false)) == Json(true);
  std::error_code ec;
  if (force) {
    for (const auto& f : fs::directory_iterator(dir, ec)) {
      if (f.path().filename().string().rfind("openaigym.", 0) == 0) fs::remove(f.path(), ec);
    }
  }
  fs::create_directories(dir, ec);
  if (ec) return message(500, "cannot create the monitor directory");
  const fs::path canonical = fs::canonical(dir, ec);
  const fs::path root = fs::canonical(c.opt.monitor_dir, ec);
  if (ec || std::mismatch(root.begin(), root.end(), canonical.begin(), canonical.end()).first != root.end()) {
    return message(500, "the monitor directory is not inside the farm's monitor directory");
  }
  monitor_call(
      c, Value(protocol::Map{{"op", "start"}, {"directory", canonical.string()}, {"video", video}, {"name", c.id}}));
  c.reg.update(c.id, [&](RestRegistry::Entry& e) {
    e.monitor = MonitorState{};
    e.monitor.active = true;
    e.monitor.directory = dir;
  });
  return empty(204);
}

HttpReply on_monitor_close(Ctx& c) {
  c.entry();
  RestRegistry::Entry snapshot;
  c.reg.update(c.id, [&](RestRegistry::Entry& e) {
    snapshot = e;
    e.monitor.active = false;
  });
  if (!snapshot.monitor.active) return empty(204);
  Value r;
  try {
    r = c.farm.call("monitor", snapshot.instance, Value(protocol::Map{{"op", "close"}}));
  } catch (const client::ClientError&) {
    // the worker could not finish the videos (it crashed, or the encoder failed): the statistics
    // are the gateway's and are written all the same, listing no videos
  }
  write_monitor(c.id, snapshot, r.find("videos"));
  return empty(204);
}

HttpReply on_render(Ctx& c) {
  const Value frame = *c.farm.call("render", c.instance()).find("frame");
  if (frame.is_tensor() && frame.as_tensor().dtype == protocol::DType::UInt8 && frame.as_tensor().shape.size() == 3) {
    const auto& t = frame.as_tensor();
    const std::size_t px = t.shape[0] * t.shape[1], ch = t.shape[2];
    std::string rgba(px * 4, '\xff');
    for (std::size_t i = 0; i < px; ++i) {
      for (std::size_t k = 0; k < std::min<std::size_t>(ch, 4); ++k) rgba[i * 4 + k] = t.data[i * ch + k];
    }
    Value f(protocol::Map{{"rows", static_cast<int64_t>(t.shape[0])},
                          {"cols", static_cast<int64_t>(t.shape[1])},
                          {"data", base64_encode(zlib_compress(rgba))}});
    return json_reply(200, Value(protocol::Map{{"render_frame", f}}));
  }
  return json_reply(200, Value(protocol::Map{{"render_frame", frame}}));
}

HttpReply on_render_png(Ctx& c) {
  const std::string& inst = c.instance();
  Value frame;
  try {
    frame = *c.farm.call("render", inst).find("frame");
  } catch (const client::ClientError& e) {
    if (e.code() != ErrorCode::EnvError) throw;
    return message(409, "the env cannot render now: " + e.error().message);
  }
  if (!frame.is_tensor()) return message(409, "the env has no rgb_array frame; make it with render_mode rgb_array");
  HttpReply r;
  r.content_type = "image/png";
  r.body = png_of(frame.as_tensor());
  return r;
}

HttpReply on_transitions(Ctx& c) {
  const std::string& inst = c.instance();
  Value r;
  try {
    r = c.farm.call("get_attr", inst, Value(protocol::Map{{"name", "P"}}));
  } catch (const client::ClientError& e) {
    if (e.code() != ErrorCode::EnvError) throw;
    return message(409, "the env has no transition table P (toy-text envs have one)");
  }
  return json_reply(200, Value(protocol::Map{{"transitions", *r.find("value")}}));
}

HttpReply on_episodes(Ctx& c) {
  const auto count = int_param(required(c.body, "count"));
  if (!count || *count < 0 || *count > kMaxEpisodes) {
    return message(400, "'count' must be an integer from 0 to " + std::to_string(kMaxEpisodes));
  }
  std::optional<uint64_t> seed;
  if (auto s = optional_param(c.body, "seed")) seed = seed_of(*s, true);
  const std::string& inst = c.instance();
  protocol::Array episodes;
  int64_t steps = 0;
  std::size_t bytes = 0;
  bool cut = false;
  auto entry_of = [&](double reward, const Value& obs) {
    Value e(protocol::Map{{"r", reward}, {"s", encode_observation(obs)}});
    bytes += e.find("s")->find("data")->as_string().size() + 48;  // the encoded frame and its JSON around it
    return e;
  };
  for (int64_t n = 0; n < *count && !cut; ++n) {
    if (c.client_gone()) return message(499, "the client went away");
    Value b(protocol::Map{});
    if (seed) b.set("seed", seed_value(*seed));
    const Value first = c.farm.call("reset", inst, b);
    protocol::Array ep{entry_of(0.0, *first.find("obs"))};
    while (true) {  // the original ends an episode at termination only (truncation is ignored)
      if (steps >= kMaxEpisodeSteps || bytes >= kMaxEpisodeBytes) {
        cut = true;
        break;
      }
      if (c.client_gone()) return message(499, "the client went away");  // nobody reads the reply: stop the work
      const Value a = *c.farm.call("sample", inst, Value(protocol::Map{{"space", "action"}})).find("value");
      const Value r = c.farm.call("step", inst, Value(protocol::Map{{"action", a}}));
      ++steps;
      ep.push_back(entry_of(widen(*r.find("reward")), *r.find("obs")));
      if (r.find("terminated")->as_bool()) break;
    }
    episodes.push_back(Value(std::move(ep)));
  }
  HttpReply reply = json_reply(200, Value(protocol::Map{{"episodes", Value(std::move(episodes))}}));
  if (cut) reply.headers.emplace_back("Gymfarm-Episodes-Cut", "the request's step or size budget ran out");
  return reply;
}

// ---- the route table (it also feeds /v1/help and /openapi.json) -------------------------------

const std::vector<Route>& routes() {
  using B = Body;
  static const std::vector<Route> r{
      {kBoth,
       "POST",
       {"v1", "envs"},
       Op::Create,
       B::Json,
       on_create,
       "Create an env: {env_id, seed?} (gymnasium-http-api: max_episode_steps, auto_reset, disable_env_checker, "
       "kwargs)"},
      {kBoth,
       "GET",
       {"v1", "envs"},
       Op::List,
       B::None,
       on_list,
       "List the envs made over REST: {all_envs: {instance_id: env_id}}"},
      {kGymnasium, "GET", {"v1", "envs", "*"}, Op::EnvInfo, B::None, on_env_info, "The env's spec id: {id}"},
      {kGymnasium, "DELETE", {"v1", "envs", "*"}, Op::Delete, B::None, on_close, "Close the env (200, empty body)"},
      {kBoth,
       "POST",
       {"v1", "envs", "*", "reset"},
       Op::Reset,
       B::GymnasiumJson,
       on_reset,
       "Reset the env: {observation} (gymnasium-http-api: {seed?}, an integer from 0 to 2**64-1)"},
      {kBoth,
       "POST",
       {"v1", "envs", "*", "step"},
       Op::Step,
       B::Json,
       on_step,
       "Step the env with {action}: {observation, reward, done, info} (gymnasium-http-api: terminated, truncated)"},
      {kBoth,
       "GET",
       {"v1", "envs", "*", "action_space"},
       Op::ActionSpace,
       B::None,
       on_action_space,
       "The action space: {info}"},
      {kBoth,
       "GET",
       {"v1", "envs", "*", "action_space", "sample"},
       Op::Sample,
       B::None,
       on_sample,
       "A random action: {action}"},
      {kBoth,
       "GET",
       {"v1", "envs", "*", "action_space", "contains", "#"},
       Op::Contains,
       B::None,
       on_contains,
       "Whether the integer action is in the space: {member}"},
      {kBoth,
       "GET",
       {"v1", "envs", "*", "observation_space"},
       Op::ObsSpace,
       B::None,
       on_obs_space,
       "The observation space: {info}"},
      {kBoth,
       "POST",
       {"v1", "envs", "*", "observation_space", "contains"},
       Op::ObsContains,
       B::Json,
       on_obs_contains,
       "Whether the space info has these properties: {member}"},
      {kOpenai,
       "POST",
       {"v1", "envs", "*", "monitor", "start"},
       Op::MonitorStart,
       B::Json,
       on_monitor_start,
       "Start recording episode statistics and videos (video_callable: null = gym's cubic schedule, false, true, N) "
       "into {directory} under the operator's monitor directory (204)"},
      {kOpenai,
       "POST",
       {"v1", "envs", "*", "monitor", "close"},
       Op::MonitorClose,
       B::None,
       on_monitor_close,
       "Stop recording and write the statistics (204)"},
      {kOpenai, "POST", {"v1", "envs", "*", "close"}, Op::Close, B::None, on_close, "Close the env (204)"},
      {kOpenai,
       "POST",
       {"v1", "upload"},
       Op::Upload,
       B::Json,
       on_upload,
       "Validate {training_dir, api_key, algorithm_id?}; the scoreboard is gone, so nothing is uploaded (204)"},
      {kOpenai,
       "POST",
       {"v1", "shutdown"},
       Op::Shutdown,
       B::None,
       on_shutdown,
       "Stop the farm (only with gymfarm start --allow-shutdown)"},
      {kGymnasium,
       "GET",
       {"v1", "envs", "*", "render"},
       Op::Render,
       B::None,
       on_render,
       "The current frame: {render_frame} (ansi text, or rgb_array as {rows, cols, data: base64(zlib(RGBA))})"},
      {kGymnasium,
       "GET",
       {"v1", "envs", "*", "transitions"},
       Op::Transitions,
       B::None,
       on_transitions,
       "The env's transition table P: {transitions} (409 when the env has none)"},
      {kGymnasium,
       "POST",
       {"v1", "envs", "*", "episodes"},
       Op::Episodes,
       B::Json,
       on_episodes,
       "Play {count} episodes of random actions (seed re-applied each reset): {episodes}; count at most 100, and at "
       "most 100000 steps and 64 MiB of episodes in all (then cut short)"},
      {kBoth,
       "GET",
       {"v1", "envs", "*", "render.png"},
       Op::RenderPng,
       B::None,
       on_render_png,
       "The current rgb_array frame as a PNG image (env made with render_mode rgb_array)"},
      {kBoth, "GET", {"v1", "help"}, Op::Help, B::None, on_help, "Every route with its methods and a one-line doc"},
      {kBoth,
       "GET",
       {"openapi.json"},
       Op::OpenApi,
       B::None,
       on_openapi,
       "The OpenAPI 3 document of this dialect's routes"},
  };
  return r;
}

// ---- dispatch -----------------------------------------------------------------------------------

// The route a request takes in one dialect (id and value: its path's segments), and the methods
// its path allows.
const Route* find_route(const HttpRequest& req, int mask, std::string& id, std::string& value, std::string& allow) {
  const auto segs = split_path(req.target);
  const Route* route = nullptr;
  for (const auto& r : routes()) {
    std::string i2, v2;
    if (!(r.dialects & mask) || !matches(r, segs, i2, v2)) continue;
    allow += (allow.empty() ? "" : ", ") + std::string(r.method);
    const bool head = req.method == "HEAD" && std::string(r.method) == "GET";
    if (r.method == req.method || head) {
      route = &r;
      id = i2;
      value = v2;
    }
  }
  return route;
}

}  // namespace

bool RestSession::is_step(const HttpRequest& req) const {
  std::string id, value, allow;
  const Route* route = find_route(req, dialect_ == RestDialect::GymHttpApi ? kOpenai : kGymnasium, id, value, allow);
  return route && route->op == Op::Step;
}

HttpReply RestSession::handle(const HttpRequest& req, client::Caller* via) {
  const int mask = dialect_ == RestDialect::GymHttpApi ? kOpenai : kGymnasium;
  std::string id, value, allow;
  const Route* route = find_route(req, mask, id, value, allow);
  if (!route) {
    if (allow.empty()) return message(404, "Not Found: " + req.target.substr(0, req.target.find('?')));
    if (req.method == "OPTIONS") {
      HttpReply r = empty(200);
      r.headers.emplace_back("Allow", allow + ", OPTIONS");
      return r;
    }
    HttpReply r = message(405, "Method " + req.method + " is not allowed here; use " + allow);
    r.headers.emplace_back("Allow", allow + ", OPTIONS");
    return r;
  }
  const bool openai = dialect_ == RestDialect::GymHttpApi;
  Ctx c{via ? *via : farm_,
        reg_,
        opt_,
        req,
        mask,
        openai,
        openai ? 1e100 : std::numeric_limits<double>::max(),
        std::move(id),
        std::move(value),
        std::nullopt,
        std::nullopt};
  try {
    if (route->body == Body::Json || (route->body == Body::GymnasiumJson && !openai)) c.body = parse_json(req);
    return route->handler(c);
  } catch (const Fail& f) {
    return f.reply;
  } catch (const client::ClientError& e) {
    if (e.code() == ErrorCode::UnknownInstance) return unknown_id(c.id);
    if (e.code() == ErrorCode::CapacityExhausted) return message(503, e.error().message);
    return message(500, e.error().message);
  } catch (const std::exception& e) {
    return message(500, e.what());
  }
}

// ---- OpenAPI --------------------------------------------------------------------------------------

namespace {

Json json_content(Json schema) { return {{"application/json", {{"schema", std::move(schema)}}}}; }

Json object_of(Json properties, const std::vector<std::string>& required) {
  Json s = {{"type", "object"}, {"properties", std::move(properties)}};
  if (!required.empty()) s["required"] = required;
  return s;
}

Json message_response(const std::string& why) {
  return {{"description", why}, {"content", json_content(object_of({{"message", {{"type", "string"}}}}, {"message"}))}};
}

Json ok_json(Json schema) { return {{"description", "success"}, {"content", json_content(std::move(schema))}}; }

Json nullable(Json s) {
  s["nullable"] = true;
  return s;
}

// An optional parameter as optional_param reads it: `s`, or what gym-http-api's get_optional_param
// takes as absent (null, "" and []).
Json absent_or(Json s) {
  return nullable(
      {{"anyOf", {std::move(s), {{"type", "string"}, {"maxLength", 0}}, {{"type", "array"}, {"maxItems", 0}}}}});
}

// What each operation really takes and answers in one dialect.
Json operation_spec(const Route& r, bool openai) {
  const Json any = Json::object();  // any JSON value
  const Json number = {{"type", "number"}};
  const Json boolean = {{"type", "boolean"}};
  const Json seed = {{"type", "integer"}, {"minimum", 0}, {"maximum", 18446744073709551615ull}};
  // what Python's int() reads that the farm carries: ASCII digits (under 10**19), '+', whitespace; "" is no seed
  const Json seed_string = {{"type", "string"},
                            {"pattern", "^([ \\t\\n\\r\\f\\v]*\\+?0*[0-9]{1,19}[ \\t\\n\\r\\f\\v]*)?$"}};
  // a required parameter: present and not null, "" or [] (gym-http-api's get_required_param)
  const Json nonempty = {{"anyOf",
                          {number,
                           boolean,
                           {{"type", "string"}, {"minLength", 1}},
                           {{"type", "array"}, {"minItems", 1}},
                           {{"type", "object"}}}}};
  const Json name = {{"type", "string"}, {"minLength", 1}};
  const Json encoded = object_of({{"type", {{"type", "string"}}}, {"data", {{"type", "string"}, {"format", "byte"}}}},
                                 {"type", "data"});
  const Json observation = openai ? any : encoded;
  const Json space = {{"type", "object"}, {"properties", {{"name", {{"type", "string"}}}}}, {"required", {"name"}}};
  Json responses = Json::object();
  Json body;  // the JSON request body, when the route reads one
  const bool instance = std::find(r.pattern.begin(), r.pattern.end(), "*") != r.pattern.end();
  if (instance) responses["400"] = message_response("bad parameters, or an unknown instance id: {message}");
  if (instance)
    responses["500"] = message_response(
        "the env failed, its worker crashed or timed out, or (gym-http-api) the action is invalid: {message}");
  switch (r.op) {
    case Op::Create:
      body = openai ? object_of({{"env_id", name}, {"seed", absent_or(seed)}}, {"env_id"})
                    : object_of({{"env_id", name},
                                 {"max_episode_steps", absent_or({{"type", "integer"}})},
                                 {"auto_reset", absent_or(boolean)},
                                 {"disable_env_checker", absent_or(boolean)},
                                 {"kwargs", absent_or({{"type", "object"}})}},
                                {"env_id"});
      responses["200"] = ok_json(
          object_of({{"instance_id", {{"type", "string"}, {"pattern", "^[0-9a-f]{8}$"}}}}, {"instance_id"}));
      responses["400"] = message_response("a missing env_id, a bad seed, or an env that cannot be made: {message}");
      responses["500"] = message_response("the farm failed: {message}");
      responses["503"] = message_response("no worker is free (--max-workers): {message}");
      break;
    case Op::List:
      responses["200"] = ok_json(object_of(
          {{"all_envs", {{"type", "object"}, {"additionalProperties", {{"type", "string"}}}}}}, {"all_envs"}));
      break;
    case Op::EnvInfo: responses["200"] = ok_json(object_of({{"id", {{"type", "string"}}}}, {"id"})); break;
    case Op::Delete: responses["200"] = {{"description", "closed (empty body)"}}; break;
    case Op::Reset:
      if (!openai) body = object_of({{"seed", absent_or({{"oneOf", {seed, seed_string}}})}}, {});
      responses["200"] = ok_json(object_of({{"observation", observation}}, {"observation"}));
      break;
    case Op::Step:
      body = object_of({{"action", nonempty}, {"render", any}}, {"action"});
      responses["200"] = ok_json(
          openai
              ? object_of({{"observation", any}, {"reward", number}, {"done", boolean}, {"info", {{"type", "object"}}}},
                          {"observation", "reward", "done", "info"})
              : object_of({{"observation", encoded},
                           {"reward", number},
                           {"terminated", boolean},
                           {"truncated", boolean},
                           {"info", {{"type", "object"}}}},
                          {"observation", "reward", "terminated", "truncated", "info"}));
      break;
    case Op::ActionSpace:
    case Op::ObsSpace: responses["200"] = ok_json(object_of({{"info", space}}, {"info"})); break;
    case Op::Sample: responses["200"] = ok_json(object_of({{"action", any}}, {"action"})); break;
    case Op::Contains:
    case Op::ObsContains:
      if (r.op == Op::ObsContains) body = {{"type", "object"}};
      responses["200"] = ok_json(object_of({{"member", boolean}}, {"member"}));
      break;
    case Op::MonitorStart:
      body = object_of(
          {{"directory", name},
           {"force", any},
           {"resume", any},
           {"video_callable",
            nullable({{"anyOf",
                       {boolean,
                        {{"type", "integer"}, {"minimum", 1}, {"maximum", std::numeric_limits<int64_t>::max()}}}}})}},
          {"directory"});
      responses["204"] = {{"description", "recording (no content)"}};
      break;
    case Op::MonitorClose:
    case Op::Close: responses["204"] = {{"description", "done (no content)"}}; break;
    case Op::Upload:
      body = object_of({{"training_dir", nonempty}, {"api_key", nonempty}, {"algorithm_id", any}},
                       {"training_dir", "api_key"});
      responses["204"] = {{"description", "validated; nothing is uploaded (no content)"}};
      responses["400"] = message_response("a missing parameter: {message}");
      break;
    case Op::Shutdown:
      responses["200"] = {{"description", "the farm stops once this is sent"},
                          {"content", {{"text/html; charset=utf-8", {{"schema", {{"type", "string"}}}}}}}};
      responses["403"] = message_response("shutdown is disabled (gymfarm start --allow-shutdown): {message}");
      break;
    case Op::Render: responses["200"] = ok_json(object_of({{"render_frame", any}}, {"render_frame"})); break;
    case Op::Transitions:
      responses["200"] = ok_json(object_of({{"transitions", any}}, {"transitions"}));
      responses["409"] = message_response("the env has no transition table P: {message}");
      break;
    case Op::Episodes:
      body = object_of(
          {{"count",
            {{"oneOf",
              {{{"type", "integer"}, {"minimum", 0}, {"maximum", kMaxEpisodes}},
               {{"type", "string"}, {"pattern", "^[ \\t\\n\\r\\f\\v]*\\+?0*(100|[1-9]?[0-9])[ \\t\\n\\r\\f\\v]*$"}}}}}},
           {"seed", absent_or({{"oneOf", {seed, seed_string}}})}},
          {"count"});
      {
        const Json step = object_of({{"r", number}, {"s", encoded}}, {"r", "s"});
        const Json episode = {{"type", "array"}, {"items", step}};
        Json props = Json::object();
        props["episodes"] = {{"type", "array"}, {"items", episode}};
        responses["200"] = ok_json(object_of(props, {"episodes"}));
      }
      responses["200"]["headers"] = {{"Gymfarm-Episodes-Cut",
                                      {{"description", "present when the step or size budget cut the episodes short"},
                                       {"schema", {{"type", "string"}}}}}};
      responses["400"] = message_response(
          "a missing or out-of-range count (0 to 100), a bad seed, or an unknown instance id: {message}");
      break;
    case Op::RenderPng:
      responses["200"] = {{"description", "the frame"},
                          {"content", {{"image/png", {{"schema", {{"type", "string"}, {"format", "binary"}}}}}}}};
      responses["409"] = message_response("the env has no rgb_array frame now: {message}");
      break;
    case Op::Help:
      responses["200"] = ok_json(object_of(
          {{"v1",
            {{"type", "object"},
             {"additionalProperties",
              object_of({{"methods", {{"type", "string"}}}, {"doc", {{"type", "string"}}}}, {"methods", "doc"})}}}},
          {"v1"}));
      break;
    case Op::OpenApi:
      responses["200"] = ok_json(
          object_of({{"openapi", {{"type", "string"}}}, {"paths", {{"type", "object"}}}}, {"openapi", "paths"}));
      break;
  }
  Json op = {{"summary", r.doc}, {"responses", responses}};
  Json params = Json::array();
  for (const auto& seg : r.pattern) {
    if (seg == "*") {
      params.push_back({{"name", "instance_id"},
                        {"in", "path"},
                        {"required", true},
                        {"schema", {{"type", "string"}, {"pattern", "^[0-9a-f]{8}$"}}}});
    }
    if (seg == "#")
      params.push_back({{"name", "x"}, {"in", "path"}, {"required", true}, {"schema", {{"type", "integer"}}}});
  }
  if (!params.empty()) op["parameters"] = params;
  if (!body.is_null()) op["requestBody"] = {{"required", true}, {"content", json_content(body)}};
  return op;
}

}  // namespace

std::string openapi_document(RestDialect dialect) {
  const bool openai = dialect == RestDialect::GymHttpApi;
  const int mask = openai ? kOpenai : kGymnasium;
  Json paths = Json::object();
  for (const auto& r : routes()) {
    if (!(r.dialects & mask)) continue;
    for (bool slash : {false, true}) {
      if (slash && (r.op == Op::OpenApi || r.op == Op::RenderPng)) continue;
      const std::string path = pattern_path(r, slash);
      Json op = operation_spec(r, openai);
      op["operationId"] = std::string(r.method) + " " + path;
      std::string method = r.method;
      for (auto& ch : method) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      paths[path][method] = op;
    }
  }
  Json doc = {{"openapi", "3.0.3"},
              {"info",
               {{"title", openai ? "gymfarm gym-http-api" : "gymfarm gymnasium-http-api"},
                {"version", "0.1.0"},
                {"description", openai ? "The gym-http-api dialect (the main port; docs/dialects.md)"
                                       : "The gymnasium-http-api dialect (--gymnasium-http-port; docs/dialects.md)"}}},
              {"paths", paths}};
  return doc.dump(2) + "\n";
}

}  // namespace gymfarm::frontends
