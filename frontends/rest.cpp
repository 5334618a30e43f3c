#include "frontends/rest.hpp"

#include <png.h>
#include <zlib.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "frontends/access.hpp"
#include "frontends/pyjson.hpp"
#include "protocol/error.hpp"
#include "protocol/token.hpp"

namespace gymfarm::frontends {

using protocol::ErrorCode;
using protocol::Value;
namespace fs = std::filesystem;

// ---- registry ----------------------------------------------------------------------------------

std::string RestRegistry::add(Entry e) {
  std::lock_guard lock(mu_);
  std::string id;
  do {
    id = protocol::random_hex(4);  // 8 hex characters, as gym-http-api makes them, from the OS CSPRNG
  } while (entries_.count(id));
  entries_.emplace(id, std::move(e));
  return id;
}

std::optional<RestRegistry::Entry> RestRegistry::get(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

bool RestRegistry::remove(const std::string& id) {
  std::lock_guard lock(mu_);
  return entries_.erase(id) > 0;
}

void RestRegistry::set_seed_used(const std::string& id) {
  update(id, [](Entry& e) { e.seed.reset(); });
}

std::vector<std::pair<std::string, std::string>> RestRegistry::list() {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [id, e] : entries_) out.emplace_back(id, e.env_id);
  return out;
}

// ---- the route table ----------------------------------------------------------------------------

namespace {

enum class Op {
  Create, List, EnvInfo, Delete, Reset, Step, ActionSpace, Sample, Contains, ObsSpace, ObsContains,
  MonitorStart, MonitorClose, Close, Upload, Shutdown, Render, Transitions, Episodes, RenderPng, Help, OpenApi,
};

constexpr int kOpenai = 1, kGymnasium = 2, kBoth = 3;

struct Route {
  int dialects;
  const char* method;
  std::vector<std::string> pattern;  // "*" = instance id, "#" = a value
  Op op;
  const char* doc;
};

const std::vector<Route>& routes() {
  static const std::vector<Route> r{
      {kBoth, "POST", {"v1", "envs"}, Op::Create, "Create an env: {env_id, seed?} (gymnasium-http-api: max_episode_steps, auto_reset, disable_env_checker, kwargs)"},
      {kBoth, "GET", {"v1", "envs"}, Op::List, "List the envs made over REST: {all_envs: {instance_id: env_id}}"},
      {kGymnasium, "GET", {"v1", "envs", "*"}, Op::EnvInfo, "The env's spec id: {id}"},
      {kGymnasium, "DELETE", {"v1", "envs", "*"}, Op::Delete, "Close the env (200, empty body)"},
      {kBoth, "POST", {"v1", "envs", "*", "reset"}, Op::Reset, "Reset the env: {observation} (gymnasium-http-api: {seed?})"},
      {kBoth, "POST", {"v1", "envs", "*", "step"}, Op::Step, "Step the env with {action}: {observation, reward, done, info} (gymnasium-http-api: terminated, truncated)"},
      {kBoth, "GET", {"v1", "envs", "*", "action_space"}, Op::ActionSpace, "The action space: {info}"},
      {kBoth, "GET", {"v1", "envs", "*", "action_space", "sample"}, Op::Sample, "A random action: {action}"},
      {kBoth, "GET", {"v1", "envs", "*", "action_space", "contains", "#"}, Op::Contains, "Whether the integer action is in the space: {member}"},
      {kBoth, "GET", {"v1", "envs", "*", "observation_space"}, Op::ObsSpace, "The observation space: {info}"},
      {kBoth, "POST", {"v1", "envs", "*", "observation_space", "contains"}, Op::ObsContains, "Whether the space info has these properties: {member}"},
      {kOpenai, "POST", {"v1", "envs", "*", "monitor", "start"}, Op::MonitorStart, "Start recording episode statistics into {directory} under the operator's monitor directory (204)"},
      {kOpenai, "POST", {"v1", "envs", "*", "monitor", "close"}, Op::MonitorClose, "Stop recording and write the statistics (204)"},
      {kOpenai, "POST", {"v1", "envs", "*", "close"}, Op::Close, "Close the env (204)"},
      {kOpenai, "POST", {"v1", "upload"}, Op::Upload, "Validate {training_dir, api_key, algorithm_id?}; the scoreboard is gone, so nothing is uploaded (204)"},
      {kOpenai, "POST", {"v1", "shutdown"}, Op::Shutdown, "Stop the farm (only with gymfarm start --allow-shutdown)"},
      {kGymnasium, "GET", {"v1", "envs", "*", "render"}, Op::Render, "The current frame: {render_frame} (ansi text, or rgb_array as {rows, cols, data: base64(zlib(RGBA))})"},
      {kGymnasium, "GET", {"v1", "envs", "*", "transitions"}, Op::Transitions, "The env's transition table P: {transitions}"},
      {kGymnasium, "POST", {"v1", "envs", "*", "episodes"}, Op::Episodes, "Play {count} episodes of random actions (seed re-applied each reset): {episodes}"},
      {kBoth, "GET", {"v1", "envs", "*", "render.png"}, Op::RenderPng, "The current rgb_array frame as a PNG image (env made with render_mode rgb_array)"},
      {kBoth, "GET", {"v1", "help"}, Op::Help, "Every route with its methods and a one-line doc"},
      {kBoth, "GET", {"openapi.json"}, Op::OpenApi, "The OpenAPI 3 document of these routes"},
  };
  return r;
}

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
  for (const auto& s : r.pattern) p += "/" + (s == "*" ? std::string("{instance_id}") : s == "#" ? std::string("{x}") : s);
  if (slash && r.op != Op::OpenApi && r.op != Op::RenderPng) p += "/";
  return p;
}

// ---- replies ----------------------------------------------------------------------------------

HttpReply json_reply(int status, const Value& v) {
  HttpReply r;
  r.status = status;
  r.body = to_json(v, kFlaskStyle) + "\n";
  return r;
}

HttpReply message(int status, const std::string& text) { return json_reply(status, Value(protocol::Map{{"message", text}})); }

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
    } else if (t.dtype == DType::Int32 || t.dtype == DType::UInt8 || t.dtype == DType::Int16 || t.dtype == DType::UInt16) {
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
    for (char c : seg) clean += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
    rel += (rel.empty() ? "" : "/") + clean;
  }
  return root + "/" + (rel.empty() ? "default" : rel);
}

void write_monitor(const std::string& id, const RestRegistry::Entry& e) {
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
                               {"videos", protocol::Array{}},
                               {"env_info", Value(protocol::Map{{"env_id", e.env_id}, {"gym_version", "gymfarm"}})}});
  std::ofstream(m.directory + "/openaigym.manifest." + id + ".manifest.json") << to_json(manifest);
}

std::string png_of(const protocol::Tensor& t) {
  if (t.dtype != protocol::DType::UInt8 || t.shape.size() != 3 || (t.shape[2] != 3 && t.shape[2] != 4)) {
    throw Fail{message(400, "the env's frame is not an RGB image")};
  }
  const auto h = static_cast<png_uint_32>(t.shape[0]), w = static_cast<png_uint_32>(t.shape[1]);
  const int channels = static_cast<int>(t.shape[2]);
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw Fail{message(500, "PNG encoding failed")};
  }
  png_set_write_fn(
      png, &out,
      [](png_structp p, png_bytep data, png_size_t n) {
        static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<const char*>(data), n);
      },
      nullptr);
  png_set_IHDR(png, info, w, h, 8, channels == 4 ? PNG_COLOR_TYPE_RGBA : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (png_uint_32 y = 0; y < h; ++y) {
    png_write_row(png, reinterpret_cast<png_const_bytep>(t.data.data() + static_cast<std::size_t>(y) * w * channels));
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
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

}  // namespace

// ---- handling -----------------------------------------------------------------------------------

HttpReply RestSession::handle(const HttpRequest& req) {
  const int mask = dialect_ == RestDialect::GymHttpApi ? kOpenai : kGymnasium;
  const double inf_as = dialect_ == RestDialect::GymHttpApi ? 1e100 : std::numeric_limits<double>::max();
  const auto segs = split_path(req.target);
  const Route* route = nullptr;
  std::string id, value, allow;
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
  auto unknown_id = [&] { return message(400, "Instance_id " + id + " unknown"); };

  try {
    std::optional<Json> body;
    const bool reads_body = route->op == Op::Create || route->op == Op::Step || route->op == Op::MonitorStart ||
                            route->op == Op::Upload || route->op == Op::ObsContains || route->op == Op::Episodes ||
                            (route->op == Op::Reset && !openai);
    if (reads_body) body = parse_json(req);

    // parameters are checked before the instance id, as in the originals
    switch (route->op) {
      case Op::Create: {
        const Json env_id = required(body, "env_id");
        Value kwargs(protocol::Map{});
        std::optional<int64_t> seed;
        if (openai) {
          if (auto s = optional_param(body, "seed"); s && s->is_number_integer() && s->get<int64_t>() != 0) {
            seed = s->get<int64_t>();
          }
        } else {
          if (auto k = optional_param(body, "kwargs")) {
            if (!k->is_object()) return message(400, "'kwargs' must be an object");
            kwargs = from_json(*k);
          }
          if (auto m = optional_param(body, "max_episode_steps")) kwargs.set("max_episode_steps", from_json(*m));
          if (auto a = optional_param(body, "auto_reset")) kwargs.set("autoreset", from_json(*a));
          if (auto d = optional_param(body, "disable_env_checker")) kwargs.set("disable_env_checker", from_json(*d));
        }
        const std::string env = py_str(env_id);
        Value r;
        try {
          r = farm_.call("make", {}, Value(protocol::Map{{"env_id", env}, {"kwargs", kwargs}}));
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
        return json_reply(200, Value(protocol::Map{{"instance_id", reg_.add(std::move(entry))}}));
      }
      case Op::List: {
        protocol::Map all;
        for (auto& [k, v] : reg_.list()) all.emplace_back(k, v);
        return json_reply(200, Value(protocol::Map{{"all_envs", Value(std::move(all))}}));
      }
      case Op::Help: {
        Value rules(protocol::Map{});
        for (const auto& r : routes()) {
          if (!(r.dialects & mask)) continue;
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
      case Op::OpenApi: {
        HttpReply r;
        r.body = openapi_document();
        return r;
      }
      case Op::Upload: {
        required(body, "training_dir");
        required(body, "api_key");
        return empty(204);
      }
      case Op::Shutdown: {
        if (!opt_.allow_shutdown) return message(403, "shutdown is disabled; start the farm with --allow-shutdown");
        HttpReply r;
        r.content_type = "text/html; charset=utf-8";
        r.body = "Server shutting down";
        r.shutdown = true;
        return r;
      }
      default:
        break;
    }

    std::optional<Json> action, render;
    if (route->op == Op::Step) {
      action = required(body, "action");
      if (openai) render = optional_param(body, "render");
    }
    if (route->op == Op::MonitorStart) required(body, "directory");
    if (route->op == Op::Episodes) required(body, "count");

    auto entry = reg_.get(id);
    if (!entry) return unknown_id();
    const std::string& inst = entry->instance;

    switch (route->op) {
      case Op::EnvInfo:
        return json_reply(200, Value(protocol::Map{{"id", entry->spec_id}}));
      case Op::Delete:
      case Op::Close: {
        try {
          farm_.call("close", inst);
        } catch (const client::ClientError&) {
          // a crashed instance is gone all the same
        }
        reg_.remove(id);
        return route->op == Op::Delete ? empty(200) : empty(204);
      }
      case Op::Reset: {
        Value b(protocol::Map{});
        if (openai) {
          if (entry->seed) {
            b.set("seed", *entry->seed);
            reg_.set_seed_used(id);
          }
        } else if (auto s = optional_param(body, "seed")) {
          if (s->is_number_integer()) b.set("seed", s->get<int64_t>());
          else if (s->is_string() && py_int(s->get<std::string>())) b.set("seed", *py_int(s->get<std::string>()));
          else return message(400, "'seed' must be an integer");
        }
        const Value r = farm_.call("reset", inst, b);
        reg_.update(id, [](RestRegistry::Entry& e) {
          if (e.monitor.active && e.monitor.started == 0.0) e.monitor.started = now_seconds();
          e.monitor.episode_reward = 0.0;
          e.monitor.episode_length = 0;
        });
        return json_reply(200, Value(protocol::Map{{"observation", openai ? *r.find("obs") : encode_observation(*r.find("obs"))}}));
      }
      case Op::Step: {
        Value a = from_json(*action);
        if (a.is_bool()) a = Value(int64_t{a.as_bool() ? 1 : 0});  // Python's bool is an int
        Value r;
        try {
          r = farm_.call("step", inst, Value(protocol::Map{{"action", a}}));
        } catch (const client::ClientError& e) {
          if (e.code() == ErrorCode::BadAction) return message(500, "invalid action: " + e.error().message);
          throw;
        }
        const double reward = widen(*r.find("reward"));
        const bool terminated = r.find("terminated")->as_bool(), truncated = r.find("truncated")->as_bool();
        Value info = *r.find("info");
        if (!info.is_map()) info = Value(protocol::Map{});
        reg_.update(id, [&](RestRegistry::Entry& e) {
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
        if (openai) {
          if (truncated && !terminated) info.set("TimeLimit.truncated", true);
          return json_reply(200, Value(protocol::Map{{"observation", *r.find("obs")},
                                                     {"reward", reward},
                                                     {"done", terminated || truncated},
                                                     {"info", info}}));
        }
        return json_reply(200, Value(protocol::Map{{"observation", encode_observation(*r.find("obs"))},
                                                   {"reward", reward},
                                                   {"terminated", terminated},
                                                   {"truncated", truncated},
                                                   {"info", info}}));
      }
      case Op::ActionSpace:
      case Op::ObsSpace: {
        const Value r = farm_.call("spaces", inst);
        const char* which = route->op == Op::ActionSpace ? "action_space" : "observation_space";
        return json_reply(200, Value(protocol::Map{{"info", space_info(*r.find(which), inf_as)}}));
      }
      case Op::Sample: {
        const Value r = farm_.call("sample", inst, Value(protocol::Map{{"space", "action"}}));
        return json_reply(200, Value(protocol::Map{{"action", *r.find("value")}}));
      }
      case Op::Contains: {
        auto x = py_int(value);
        if (!x) return message(500, "invalid literal for int() with base 10: '" + value + "'");
        const Value r = farm_.call("spaces", inst);
        std::string err;
        auto space = protocol::Space::from_value(*r.find("action_space"), err);
        return json_reply(200, Value(protocol::Map{{"member", space && space->contains(Value(*x))}}));
      }
      case Op::ObsContains: {
        if (!body || !body->is_object()) return message(500, "the body must be a JSON object of space properties");
        const Value r = farm_.call("spaces", inst);
        const Value info = space_info(*r.find("observation_space"), inf_as);
        bool member = true;
        for (const auto& [k, v] : body->items()) {
          const Value* mine = info.find(k);
          if (!mine) return message(500, "the observation space has no property '" + k + "'");
          member = member && to_json(*mine) == to_json(from_json(v));
        }
        return json_reply(200, Value(protocol::Map{{"member", member}}));
      }
      case Op::MonitorStart: {
        const std::string dir = monitor_path(opt_.monitor_dir, py_str(required(body, "directory")));
        const bool force = optional_param(body, "force").value_or(Json(false)) == Json(true);
        std::error_code ec;
        if (force) {
          for (const auto& f : fs::directory_iterator(dir, ec)) {
            if (f.path().filename().string().rfind("openaigym.", 0) == 0) fs::remove(f.path(), ec);
          }
        }
        fs::create_directories(dir, ec);
        if (ec) return message(500, "cannot create the monitor directory");
        reg_.update(id, [&](RestRegistry::Entry& e) {
          e.monitor = MonitorState{};
          e.monitor.active = true;
          e.monitor.directory = dir;
        });
        return empty(204);
      }
      case Op::MonitorClose: {
        RestRegistry::Entry snapshot;
        reg_.update(id, [&](RestRegistry::Entry& e) {
          snapshot = e;
          e.monitor.active = false;
        });
        if (snapshot.monitor.active) write_monitor(id, snapshot);
        return empty(204);
      }
      case Op::Render: {
        const Value frame = *farm_.call("render", inst).find("frame");
        if (frame.is_tensor() && frame.as_tensor().dtype == protocol::DType::UInt8 && frame.as_tensor().shape.size() == 3) {
          const auto& t = frame.as_tensor();
          const std::size_t px = t.shape[0] * t.shape[1], c = t.shape[2];
          std::string rgba(px * 4, '\xff');
          for (std::size_t i = 0; i < px; ++i) {
            for (std::size_t k = 0; k < std::min<std::size_t>(c, 4); ++k) rgba[i * 4 + k] = t.data[i * c + k];
          }
          Value f(protocol::Map{{"rows", static_cast<int64_t>(t.shape[0])},
                                {"cols", static_cast<int64_t>(t.shape[1])},
                                {"data", base64_encode(zlib_compress(rgba))}});
          return json_reply(200, Value(protocol::Map{{"render_frame", f}}));
        }
        return json_reply(200, Value(protocol::Map{{"render_frame", frame}}));
      }
      case Op::RenderPng: {
        Value frame;
        try {
          frame = *farm_.call("render", inst).find("frame");
        } catch (const client::ClientError& e) {
          if (e.code() != ErrorCode::EnvError) throw;
          return message(409, "the env cannot render now: " + e.error().message);
        }
        if (!frame.is_tensor()) {
          return message(409, "the env has no rgb_array frame; make it with render_mode rgb_array");
        }
        HttpReply r;
        r.content_type = "image/png";
        r.body = png_of(frame.as_tensor());
        return r;
      }
      case Op::Transitions: {
        const Value r = farm_.call("get_attr", inst, Value(protocol::Map{{"name", "P"}}));
        return json_reply(200, Value(protocol::Map{{"transitions", *r.find("value")}}));
      }
      case Op::Episodes: {
        const Json count_j = required(body, "count");
        auto count = count_j.is_number_integer() ? std::optional<int64_t>(count_j.get<int64_t>())
                     : count_j.is_string()        ? py_int(count_j.get<std::string>())
                                                  : std::nullopt;
        if (!count || *count < 0 || *count > 10000) return message(400, "'count' must be an integer from 0 to 10000");
        std::optional<int64_t> seed;
        if (auto s = optional_param(body, "seed")) {
          seed = s->is_number_integer() ? std::optional<int64_t>(s->get<int64_t>())
                 : s->is_string()       ? py_int(s->get<std::string>())
                                        : std::nullopt;
        }
        protocol::Array episodes;
        for (int64_t n = 0; n < *count; ++n) {
          Value b(protocol::Map{});
          if (seed) b.set("seed", *seed);
          const Value first = farm_.call("reset", inst, b);
          protocol::Array ep{Value(protocol::Map{{"r", 0.0}, {"s", encode_observation(*first.find("obs"))}})};
          for (int t = 0; t < 100000; ++t) {  // bounded: the original stopped at termination only
            const Value a = *farm_.call("sample", inst, Value(protocol::Map{{"space", "action"}})).find("value");
            const Value r = farm_.call("step", inst, Value(protocol::Map{{"action", a}}));
            ep.push_back(Value(protocol::Map{{"r", widen(*r.find("reward"))}, {"s", encode_observation(*r.find("obs"))}}));
            if (r.find("terminated")->as_bool()) break;
          }
          episodes.push_back(Value(std::move(ep)));
        }
        return json_reply(200, Value(protocol::Map{{"episodes", Value(std::move(episodes))}}));
      }
      default:
        return message(500, "unhandled route");
    }
  } catch (const Fail& f) {
    return f.reply;
  } catch (const client::ClientError& e) {
    if (e.code() == ErrorCode::UnknownInstance) return unknown_id();
    if (e.code() == ErrorCode::CapacityExhausted) return message(503, e.error().message);
    return message(500, e.error().message);
  } catch (const std::exception& e) {
    return message(500, e.what());
  }
}

// ---- OpenAPI --------------------------------------------------------------------------------------

std::string openapi_document() {
  Json paths = Json::object();
  for (const auto& r : routes()) {
    for (bool slash : {false, true}) {
      if (slash && (r.op == Op::OpenApi || r.op == Op::RenderPng)) continue;
      const std::string path = pattern_path(r, slash);
      Json op = {{"summary", r.doc},
                 {"tags", Json::array({r.dialects == kBoth ? "both" : r.dialects == kOpenai ? "gym-http-api" : "gymnasium-http-api"})},
                 {"operationId", std::string(r.method) + " " + path}};
      Json params = Json::array();
      for (const auto& seg : r.pattern) {
        if (seg == "*") params.push_back({{"name", "instance_id"}, {"in", "path"}, {"required", true}, {"schema", {{"type", "string"}}}});
        if (seg == "#") params.push_back({{"name", "x"}, {"in", "path"}, {"required", true}, {"schema", {{"type", "string"}}}});
      }
      if (!params.empty()) op["parameters"] = params;
      if (std::string(r.method) == "POST") {
        op["requestBody"] = {{"required", false},
                             {"content", {{"application/json", {{"schema", {{"type", "object"}, {"nullable", true}}}}}}}};
      }
      const bool png = r.op == Op::RenderPng;
      op["responses"] = {
          {"200", {{"description", "success"},
                   {"content", {{png ? "image/png" : "application/json", {{"schema", png ? Json{{"type", "string"}, {"format", "binary"}} : Json{{"type", "object"}}}}}}}}},
          {"204", {{"description", "success, no content (gym-http-api monitor, close, upload)"}}},
          {"400", {{"description", "bad request or unknown instance: {message}"}}},
          {"500", {{"description", "the env failed or the action is invalid: {message}"}}},
      };
      std::string method = r.method;
      for (auto& c : method) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      paths[path][method] = op;
    }
  }
  Json doc = {{"openapi", "3.0.3"},
              {"info", {{"title", "gymfarm REST API"},
                        {"version", "0.1.0"},
                        {"description", "gym-http-api (main port) and gymnasium-http-api (--gymnasium-http-port) dialects"}}},
              {"paths", paths}};
  return doc.dump(2) + "\n";
}

}  // namespace gymfarm::frontends
