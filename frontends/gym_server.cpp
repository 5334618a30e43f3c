#include "frontends/gym_server.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string_view>
#include <vector>

#include "frontends/png.hpp"
#include "frontends/pyjson.hpp"
#include "protocol/error.hpp"
#include "protocol/token.hpp"

namespace gymfarm::frontends {

using protocol::ErrorCode;
using protocol::Value;

bool is_gym_server_id(const std::string& id) {
  return id.size() == 8 &&
         std::all_of(id.begin(), id.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

namespace {

// ---- files under the root: every component checked, no symlink followed --------------------------

constexpr std::size_t kMaxServedFile = std::size_t{64} << 20;

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// A frame's file name: N.png or latest.png.
bool is_frame_name(const std::string& n) {
  if (n == "latest.png") return true;
  if (n.size() < 5 || n.size() > 22 || n.compare(n.size() - 4, 4, ".png") != 0) return false;
  return std::all_of(n.begin(), n.end() - 4, [](char c) { return c >= '0' && c <= '9'; });
}

// A monitor file's name: letters, digits, '.', '-', '_', not starting with '.'.
bool is_plain_name(const std::string& n) {
  if (n.empty() || n.size() > 200 || n[0] == '.') return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
  });
}

// The directory root/a/b/... (each a checked name), opened without following symlinks; created
// (0755) when asked.
Fd open_dir(const std::string& root, const std::vector<std::string>& parts, bool create) {
  if (create) {
    std::error_code ec;
    std::filesystem::create_directories(root, ec);
  }
  Fd dir(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  for (const auto& p : parts) {
    if (!dir) return dir;
    if (create) ::mkdirat(dir.get(), p.c_str(), 0755);  // EEXIST is fine
    dir = Fd(::openat(dir.get(), p.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  }
  return dir;
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Writes name in dir: through a temporary file renamed over it, so a reader never sees half.
bool write_file_at(int dir, const std::string& name, std::string_view data, const std::string& tmp_tag) {
  const std::string tmp = ".tmp-" + tmp_tag + "-" + name;
  ::unlinkat(dir, tmp.c_str(), 0);
  Fd f(::openat(dir, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!f) return false;
  const bool ok = write_all(f.get(), data);
  f = Fd();
  if (!ok || ::renameat(dir, tmp.c_str(), dir, name.c_str()) != 0) {
    ::unlinkat(dir, tmp.c_str(), 0);
    return false;
  }
  return true;
}

std::vector<std::string> list_dir(int dir_fd, bool (*keep)(const std::string&)) {
  std::vector<std::string> out;
  const int fd = ::dup(dir_fd);
  if (fd < 0) return out;
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return out;
  }
  ::rewinddir(d);
  while (dirent* e = ::readdir(d)) {  // NOLINT(concurrency-mt-unsafe): one DIR per call, not shared
    std::string n = e->d_name;
    if (keep(n)) out.push_back(std::move(n));
  }
  ::closedir(d);
  return out;
}

// ---- replies ----------------------------------------------------------------------------------

// gym-server's InvalidUsage: {"error": message}.
HttpReply error_reply(int status, const std::string& text) {
  return json_reply(status, Value(protocol::Map{{"error", text}}));
}

struct Fail {
  HttpReply reply;
};

HttpReply unknown_id(const std::string& id) { return error_reply(404, "Instance_id " + id + " unknown"); }

// Python's truthiness of a JSON value (`if render:`).
bool truthy(const Json& v) {
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number_integer()) return v.get<int64_t>() != 0 || (v.is_number_unsigned() && v.get<uint64_t>() != 0);
  if (v.is_number_float()) return v.get<double>() != 0.0;
  if (v.is_string() || v.is_array() || v.is_object()) return !v.empty();
  return false;
}

// The request's JSON body: absent or null is {} (gym-server read fields with .get()); other
// non-objects and malformed JSON are a 400.
Json body_of(const HttpRequest& req) {
  if (req.body.empty()) return Json::object();
  if (json_depth(req.body) > 64) throw Fail{error_reply(400, "Request JSON is nested too deeply")};
  Json j = Json::parse(req.body, nullptr, false);
  if (j.is_discarded()) throw Fail{error_reply(400, "Request is not a valid json")};
  if (j.is_null()) return Json::object();
  if (!j.is_object()) throw Fail{error_reply(400, "Request json must be an object")};
  return j;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Python's int(x) of what gym-server's from_jsonable handed it: an int, a float (truncated), a bool,
// or a decimal string.
std::optional<int64_t> action_int(const Json& a) {
  if (a.is_boolean()) return a.get<bool>() ? 1 : 0;
  if (a.is_number_unsigned()) {
    if (a.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(a.get<uint64_t>());
  }
  if (a.is_number_integer()) return a.get<int64_t>();
  if (a.is_number_float()) {
    const double d = a.get<double>();
    if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return std::nullopt;
    return static_cast<int64_t>(d);
  }
  if (a.is_string()) {
    std::string s = a.get<std::string>();
    const auto b = s.find_first_not_of(" \t\n\r\f\v"), e = s.find_last_not_of(" \t\n\r\f\v");
    if (b == std::string::npos) return std::nullopt;
    s = s.substr(b, e - b + 1);
    std::size_t i = (s[0] == '+' || s[0] == '-') ? 1 : 0;
    if (i == s.size() || s.size() > 19 || s.find_first_not_of("0123456789", i) != std::string::npos)
      return std::nullopt;
    return std::stoll(s);
  }
  return std::nullopt;
}

// ---- spaces as gym-server showed them ------------------------------------------------------------

std::string py_num(double x, bool is_float) {
  if (!is_float) return std::to_string(static_cast<int64_t>(x));
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  if (std::isnan(x)) return "nan";
  return py_float(x);
}

// numpy's str() of a 1-D bound, as Box's repr shows a bound that is not one value: [-1. -2.5]
std::string bound_repr(const protocol::Tensor& t, bool is_float) {
  bool same = t.elements() > 0;
  for (std::size_t i = 1; i < t.elements() && same; ++i) same = t.as_double(i) == t.as_double(0);
  if (same) return py_num(t.as_double(0), is_float);
  std::string out = "[";
  for (std::size_t i = 0; i < t.elements(); ++i) {
    std::string n = py_num(t.as_double(i), is_float);
    if (is_float && n.size() > 2 && n.compare(n.size() - 2, 2, ".0") == 0) n.pop_back();  // numpy writes "1."
    out += (i ? " " : "") + n;
  }
  return out + "]";
}

int64_t int_of(const Value* v) { return v ? v->get_int().value_or(0) : 0; }

std::string shape_repr(const Value* shape) {
  std::string out = "(";
  std::size_t n = 0;
  if (shape && shape->is_array()) {
    for (const auto& d : shape->as_array()) out += (n++ ? ", " : "") + std::to_string(d.get_int().value_or(0));
  }
  return out + (n == 1 ? ",)" : ")");
}

// str(space) as Gymnasium writes it for the common spaces.
std::string space_str(const Value& space) {
  const Value* type = space.find("type");
  const std::string name = type && type->is_string() ? type->as_string() : "Space";
  if (name == "Discrete") {
    const int64_t n = int_of(space.find("n"));
    const int64_t start = int_of(space.find("start"));
    return "Discrete(" + std::to_string(n) + (start ? ", start=" + std::to_string(start) : "") + ")";
  }
  if (name == "Box") {
    const Value* dtype = space.find("dtype");
    const std::string dt = dtype && dtype->is_string() ? dtype->as_string() : "float32";
    const bool is_float = dt.rfind("float", 0) == 0;
    const Value* low = space.find("low");
    const Value* high = space.find("high");
    if (!low || !high || !low->is_tensor() || !high->is_tensor()) return "Box(" + shape_repr(space.find("shape")) + ")";
    return "Box(" + bound_repr(low->as_tensor(), is_float) + ", " + bound_repr(high->as_tensor(), is_float) + ", " +
           shape_repr(space.find("shape")) + ", " + dt + ")";
  }
  if (name == "Unsupported" && space.find("repr") && space.find("repr")->is_string())
    return space.find("repr")->as_string();
  if (name == "Tuple" && space.find("spaces")) {
    std::string out = "Tuple(";
    std::size_t i = 0;
    for (const auto& s : space.find("spaces")->as_array()) out += (i++ ? ", " : "") + space_str(s);
    return out + ")";
  }
  return name + "()";
}

// gym-server's observation_space info: {shape, low, high} (Box bounds as tolist(), ±inf as
// Infinity); a Discrete space, which has no bounds in Gymnasium, as its range.
Value observation_info(const Value& space) {
  const Value* type = space.find("type");
  const std::string name = type && type->is_string() ? type->as_string() : "";
  if (name == "Box") {
    return Value(
        protocol::Map{{"high", *space.find("high")}, {"low", *space.find("low")}, {"shape", *space.find("shape")}});
  }
  if (name == "Discrete") {
    const int64_t n = int_of(space.find("n")), start = int_of(space.find("start"));
    return Value(protocol::Map{{"high", start + n - 1}, {"low", start}, {"n", n}, {"shape", protocol::Array{}}});
  }
  return Value(protocol::Map{{"shape", protocol::Array{}}, {"space", space_str(space)}});
}

// ---- one request -----------------------------------------------------------------------------

struct Ctx {
  client::Caller& farm;
  GymServerRegistry& reg;
  const GymServerOptions& opt;
  const HttpRequest& req;
  std::string id;
  std::optional<GymServerEntry> found;

  const GymServerEntry& entry() {
    if (!found) found = reg.get(id);
    if (!found) throw Fail{unknown_id(id)};
    return *found;
  }
};

// Renders the env's frame into ROOT/<id>/rendered/N.png and latest.png: the "render" field.
std::string render_frame(Ctx& c) {
  Value frame;
  try {
    frame = *c.farm.call("render", c.entry().instance).find("frame");
  } catch (const client::ClientError& e) {
    if (e.code() == ErrorCode::UnknownInstance) throw;
    return "Error: " + e.error().message;
  }
  if (!frame.is_tensor()) return "Error: Environment does not support 'rgb_array' renders.";
  const auto png = encode_png(frame.as_tensor());
  if (!png) return "Error: the env's frame is not an RGB image";
  int64_t n = 0;
  if (!c.reg.update(c.id, [&](GymServerEntry& e) { n = ++e.rendered; })) throw Fail{unknown_id(c.id)};
  const Fd dir = open_dir(c.opt.root, {c.id, "rendered"}, true);
  const std::string name = std::to_string(n) + ".png";
  if (!dir || !write_file_at(dir.get(), name, *png, std::to_string(n)) ||
      !write_file_at(dir.get(), "latest.png", *png, std::to_string(n))) {
    return "Error: cannot write the frame";
  }
  std::vector<int64_t> drop;  // past the caps: the oldest numbered frames go
  c.reg.update(c.id, [&](GymServerEntry& e) {
    e.frames.emplace_back(n, png->size());
    e.frame_bytes += png->size();
    while (e.frames.size() > 1 && (e.frames.size() > c.opt.max_frames || e.frame_bytes > c.opt.max_frame_bytes)) {
      drop.push_back(e.frames.front().first);
      e.frame_bytes -= e.frames.front().second;
      e.frames.pop_front();
    }
  });
  for (int64_t old : drop) ::unlinkat(dir.get(), (std::to_string(old) + ".png").c_str(), 0);
  return "successfully rendered: " + name;
}

// The monitor's statistics, as gym's Monitor wrote them, and its videos' names into ROOT/<id>/simulation/.
void write_monitor(const GymServerOptions& opt, const std::string& id, const GymServerEntry& e, int64_t batch,
                   const Value* videos) {
  const auto& m = e.monitor;
  const Fd dir = open_dir(opt.root, {id, "simulation"}, true);
  if (!dir) return;
  protocol::Array rewards, lengths, stamps, types;
  for (double r : m.rewards) rewards.emplace_back(r);
  for (auto l : m.lengths) lengths.emplace_back(l);
  for (double t : m.timestamps) stamps.emplace_back(t);
  for (std::size_t i = 0; i < m.rewards.size(); ++i) types.emplace_back("t");
  const Value stats(protocol::Map{{"initial_reset_timestamp", m.started},
                                  {"timestamps", stamps},
                                  {"episode_lengths", lengths},
                                  {"episode_rewards", rewards},
                                  {"episode_types", types}});
  const std::string tag = std::to_string(batch) + "." + id;
  const std::string stats_name = "openaigym.episode_batch." + tag + ".stats.json";
  write_file_at(dir.get(), stats_name, to_json(stats), tag);
  const Value manifest(
      protocol::Map{{"stats", stats_name},
                    {"videos", video_pairs(videos)},
                    {"env_info", Value(protocol::Map{{"env_id", e.env_id}, {"gym_version", "gymfarm"}})}});
  write_file_at(dir.get(), "openaigym.manifest." + tag + ".manifest.json", to_json(manifest), tag);
}

bool is_monitor_file(const std::string& n) { return n.rfind("openaigym.", 0) == 0 && is_plain_name(n); }

HttpReply on_create(Ctx& c) {
  const Json body = body_of(c.req);
  if (!body.contains("environment") || !body["environment"].is_string() ||
      body["environment"].get<std::string>().empty()) {
    return error_reply(400, "A required request parameter 'environment' was not provided");
  }
  const std::string env = body["environment"].get<std::string>();
  // Frames come from rgb_array renders, which Gymnasium fixes at make; an env without that mode
  // is made plainly (its renders then answer "Error: ...").
  Value r;
  try {
    r = c.farm.call(
        "make", {},
        Value(protocol::Map{{"env_id", env}, {"kwargs", Value(protocol::Map{{"render_mode", "rgb_array"}})}}));
  } catch (const client::ClientError& e) {
    if (e.code() != ErrorCode::BadRequest && e.code() != ErrorCode::EnvError) throw;
    try {
      r = c.farm.call("make", {}, Value(protocol::Map{{"env_id", env}, {"kwargs", Value(protocol::Map{})}}));
    } catch (const client::ClientError& again) {
      if (again.code() != ErrorCode::BadRequest && again.code() != ErrorCode::EnvError) throw;
      return error_reply(400, again.error().message);
    }
  }
  GymServerEntry entry;
  entry.instance = r.find("instance_id")->as_string();
  entry.env_id = env;
  return json_reply(201, Value(protocol::Map{{"instance_id", c.reg.add(std::move(entry))}}));
}

HttpReply on_reset(Ctx& c) {
  const Json body = body_of(c.req);
  const bool render = body.contains("render") && truthy(body["render"]);
  const Value r = c.farm.call("reset", c.entry().instance);
  c.reg.update(c.id, [](GymServerEntry& e) {
    e.episode_over = false;
    e.monitor.episode_reward = 0.0;
    e.monitor.episode_length = 0;
  });
  Value out(protocol::Map{{"observation", *r.find("obs")}});
  if (render) out.set("render", render_frame(c));
  return json_reply(200, out);
}

double widen(const Value& v) {
  if (v.is_tensor()) return v.as_tensor().as_double(0);
  return v.is_number() ? v.as_double() : 0.0;
}

HttpReply on_step(Ctx& c) {
  const Json body = body_of(c.req);
  if (!body.contains("action") || body["action"].is_null())
    return error_reply(400, "A required request parameter 'action' was not provided");
  const bool render = body.contains("render") && truthy(body["render"]);
  const std::string& inst = c.entry().instance;
  const auto action = action_int(body["action"]);  // gym-server: int(action_space.from_jsonable(action))
  if (!action) return error_reply(400, "Invalid Action");
  Value r;
  try {
    r = c.farm.call("step", inst, Value(protocol::Map{{"action", *action}}));
  } catch (const client::ClientError& e) {
    const Value* type = e.error().details.find("type");
    const std::string kind = type && type->is_string() ? type->as_string() : "";
    if (e.code() == ErrorCode::BadAction || (e.code() == ErrorCode::EnvError && kind == "AssertionError"))
      return error_reply(400, "Invalid Action");  // gym-server: the env's assert on the action
    if (e.code() == ErrorCode::EnvError && kind == "ResetNeeded") {
      const Value* text = e.error().details.find("message");
      return error_reply(400, text && text->is_string() ? text->as_string() : e.error().message);
    }
    throw;
  }
  const double reward = widen(*r.find("reward"));
  const bool done = r.find("terminated")->as_bool() || r.find("truncated")->as_bool();
  Value info = *r.find("info");
  if (!info.is_map()) info = Value(protocol::Map{});
  c.reg.update(c.id, [&](GymServerEntry& e) {
    auto& m = e.monitor;
    const bool counted = m.active && !e.episode_over;
    e.episode_over = e.episode_over || done;
    if (!counted) return;
    m.episode_reward += reward;
    m.episode_length += 1;
    if (done) {
      m.rewards.push_back(m.episode_reward);
      m.lengths.push_back(m.episode_length);
      m.timestamps.push_back(now_seconds());
      m.episode_reward = 0.0;
      m.episode_length = 0;
    }
  });
  Value out(protocol::Map{{"done", done}, {"info", info}, {"observation", *r.find("obs")}, {"reward", reward}});
  if (render) out.set("render", render_frame(c));
  return json_reply(200, out);
}

HttpReply on_info(Ctx& c) {
  const Value r = c.farm.call("spaces", c.entry().instance);
  return json_reply(200, Value(protocol::Map{{"action_space", space_str(*r.find("action_space"))},
                                             {"observation_space", observation_info(*r.find("observation_space"))}}));
}

HttpReply on_monitor_start(Ctx& c) {
  const Json body = body_of(c.req);
  const bool force = body.contains("force") && truthy(body["force"]);
  const bool resume = body.contains("resume") && truthy(body["resume"]);
  c.entry();
  const Fd dir = open_dir(c.opt.root, {c.id, "simulation"}, true);
  if (!dir) return error_reply(500, "cannot create the monitor directory");
  std::error_code ec;
  const auto canonical = std::filesystem::canonical(c.opt.root + "/" + c.id + "/simulation", ec);
  if (ec) return error_reply(500, "cannot resolve the monitor directory");
  const auto existing = list_dir(dir.get(), is_monitor_file);
  if (force) {
    for (const auto& f : existing) ::unlinkat(dir.get(), f.c_str(), 0);
  } else if (!existing.empty() && !resume) {
    return error_reply(400, "Trying to write to monitor directory " + c.id +
                                "/simulation with existing monitor files: " + existing.front() +
                                ". You should use a unique directory for each training run, or use 'force=True' "
                                "to automatically clear previous monitor files.");
  }
  // Videos of the episodes gym Monitor's default schedule picks (capped cubic: 0, 1, 8, 27, ...,
  // then every 1000th), recorded by the instance's worker into the directory just checked.
  try {
    c.farm.call(
        "monitor", c.entry().instance,
        Value(protocol::Map{{"op", "start"}, {"directory", canonical.string()}, {"video", "cubic"}, {"name", c.id}}));
  } catch (const client::ClientError& e) {
    if (e.code() != ErrorCode::BadRequest) throw;
    return error_reply(400, e.error().message);
  }
  c.reg.update(c.id, [&](GymServerEntry& e) {
    e.monitor = MonitorState{};
    e.monitor.active = true;
    e.monitor.directory = c.id + "/simulation";
    e.monitor.started = now_seconds();
  });
  return json_reply(200, Value(protocol::Map{{"message", true}}));
}

HttpReply on_monitor_close(Ctx& c) {
  c.entry();
  GymServerEntry snapshot;
  int64_t batch = 0;
  c.reg.update(c.id, [&](GymServerEntry& e) {
    snapshot = e;
    if (e.monitor.active) batch = e.batches++;
    e.monitor.active = false;
  });
  if (snapshot.monitor.active) {
    Value r;
    try {
      r = c.farm.call("monitor", snapshot.instance, Value(protocol::Map{{"op", "close"}}));
    } catch (const client::ClientError&) {
      // the worker could not finish the videos: the statistics are written all the same
    }
    write_monitor(c.opt, c.id, snapshot, batch, r.find("videos"));
  }
  return json_reply(200, Value(protocol::Map{{"message", true}}));
}

// gym-server handed the monitor files to gym.upload; the scoreboard is gone, so (as the
// gym-http-api dialect does) the request is checked and nothing is sent anywhere.
HttpReply on_upload(Ctx& c) {
  if (c.req.body.empty()) return error_reply(400, "'NoneType' object has no attribute 'get'");
  (void)body_of(c.req);
  c.entry();
  return json_reply(200, Value(protocol::Map{{"message", true}}));
}

HttpReply on_help(Ctx& c);

struct Route {
  const char* method;
  std::vector<std::string> pattern;  // "*": the instance id
  const char* rule;                  // as Flask names it
  bool trailing_slash;               // how gym-server spelled the rule
  HttpReply (*handler)(Ctx&);
  const char* doc;
};

const std::vector<Route>& routes() {
  static const std::vector<Route> r{
      {"POST",
       {"v1", "envs", "create"},
       "/v1/envs/create/",
       true,
       on_create,
       "Create an environment from a json body:\n    {\n      'environment': 'CartPole-v0'\n    }\n\n"
       "    :return: json with the new instance_id (201)"},
      {"POST",
       {"v1", "envs", "*", "reset"},
       "/v1/envs/<instance_id>/reset/",
       true,
       on_reset,
       "Reset the environment; with {\"render\": true} also save a frame.\n\n    :param instance_id:\n"
       "    :return: the first observation (and the render result)"},
      {"POST",
       {"v1", "envs", "*", "step"},
       "/v1/envs/<instance_id>/step/",
       true,
       on_step,
       "Take one step with the given action:\n    {\n      'action': 0,\n      'render': true\n    }\n\n"
       "    The action is an integer; render is optional.\n\n    :param instance_id:\n"
       "    :return: observation, reward, done and info (400 Invalid Action for an action outside the space)"},
      {"POST",
       {"v1", "envs", "*", "monitor", "start"},
       "/v1/envs/<instance_id>/monitor/start/",
       true,
       on_monitor_start,
       "Start recording episode statistics into <instance_id>/simulation/:\n    {\n        'force': true,\n"
       "        'resume': false\n    }\n    :param instance_id:\n    :return: message true"},
      {"POST",
       {"v1", "envs", "*", "monitor", "close"},
       "/v1/envs/<instance_id>/monitor/close/",
       true,
       on_monitor_close,
       "Stop recording and write the statistics.\n    :param instance_id:\n    :return: message true"},
      {"POST",
       {"v1", "envs", "*", "monitor", "stop"},
       "/v1/envs/<instance_id>/monitor/stop/",
       true,
       on_monitor_close,
       "The same as monitor/close/ (the name gym-server's README uses).\n    :param instance_id:\n"
       "    :return: message true"},
      {"POST",
       {"v1", "envs", "*", "upload"},
       "/v1/envs/<instance_id>/upload/",
       true,
       on_upload,
       "Accept an upload request; the scoreboard is gone, so nothing is uploaded.\n    :param instance_id:\n"
       "    :return: message true"},
      {"GET",
       {"v1", "envs", "*", "info"},
       "/v1/envs/<instance_id>/info",
       false,
       on_info,
       "The action space and the observation space's shape, low and high.\n    :param instance_id:\n    :return:"},
      {"GET", {"v1", "help"}, "/v1/help", false, on_help, ":return: every rule, its methods and its doc."},
  };
  return r;
}

HttpReply on_help(Ctx&) {
  Value rules(protocol::Map{});
  for (const auto& r : routes()) {
    const std::string methods = std::string(r.method) == "GET" ? "HEAD,OPTIONS,GET" : "POST,OPTIONS";
    rules.set(r.rule, Value(protocol::Map{{"doc", r.doc}, {"methods", methods}}));
  }
  return json_reply(200, Value(protocol::Map{{"v1", rules}}));
}

std::vector<std::string> segments(const std::string& target) {
  const std::string path = target.substr(0, target.find('?'));
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

// ---- the artifacts ------------------------------------------------------------------------------

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The path's segments, percent-decoded (as SimpleHTTPServer decoded them); nullopt when a
// segment decodes to something that is no plain name (a '/', a NUL, "." or "..").
std::optional<std::vector<std::string>> decoded_segments(const std::string& target) {
  std::vector<std::string> out;
  for (const auto& raw : segments(target)) {
    std::string s;
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '%' && i + 2 < raw.size()) {
        const int h = hex_digit(raw[i + 1]), l = hex_digit(raw[i + 2]);
        if (h < 0 || l < 0) return std::nullopt;
        s += static_cast<char>(h * 16 + l);
        i += 2;
      } else if (raw[i] == '%') {
        return std::nullopt;
      } else {
        s += raw[i];
      }
    }
    if (s.empty() || s == "." || s == ".." || s.find('/') != std::string::npos || s.find('\0') != std::string::npos)
      return std::nullopt;
    out.push_back(std::move(s));
  }
  return out;
}

HttpReply not_found() {
  HttpReply r;
  r.status = 404;
  r.content_type = "text/html; charset=utf-8";
  r.body = "<html><body><h1>404 Not Found</h1></body></html>\n";
  return r;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    switch (ch) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += ch;
    }
  }
  return out;
}

HttpReply listing(const std::string& shown, std::vector<std::string> names, bool numeric) {
  std::sort(names.begin(), names.end(), [numeric](const std::string& a, const std::string& b) {
    if (numeric && a.size() != b.size()) return a.size() < b.size();  // 2.png before 10.png
    return a < b;
  });
  HttpReply r;
  r.content_type = "text/html; charset=utf-8";
  r.body = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Directory listing for " + html_escape(shown) +
           "</title></head>\n<body><h1>Directory listing for " + html_escape(shown) + "</h1><hr><ul>\n";
  for (const auto& n : names) r.body += "<li><a href=\"" + html_escape(n) + "\">" + html_escape(n) + "</a></li>\n";
  r.body += "</ul><hr></body></html>\n";
  return r;
}

std::string content_type_of(const std::string& name) {
  auto ends = [&](std::string_view x) {
    return name.size() >= x.size() && name.compare(name.size() - x.size(), x.size(), x) == 0;
  };
  if (ends(".png")) return "image/png";
  if (ends(".json")) return "application/json";
  if (ends(".mp4")) return "video/mp4";
  if (ends(".txt")) return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

// A regular file `name` in the directory fd, without following a symlink.
HttpReply serve_file(int dir, const std::string& name) {
  Fd f(::openat(dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  struct stat st {};
  if (!f || ::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode)) return not_found();
  if (static_cast<std::size_t>(st.st_size) > kMaxServedFile) return error_reply(413, "the file is too large to serve");
  HttpReply r;
  r.content_type = content_type_of(name);
  r.headers.emplace_back("Cache-Control", "no-store");
  r.body.resize(static_cast<std::size_t>(st.st_size));
  std::size_t got = 0;
  while (got < r.body.size()) {
    const ssize_t n = ::read(f.get(), r.body.data() + got, r.body.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  r.body.resize(got);
  return r;
}

// The live page: the instance's latest frame, fetched again every 500 ms (no scripts from a CDN).
constexpr const char* kRenderPage = R"(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<title>gym-server render</title>
<style>body { font-family: sans-serif; margin: 1em; } #frame { max-width: 100%; image-rendering: pixelated; }</style>
</head>
<body>
<p id="status"></p>
<img id="frame" alt="the latest frame">
<script>
(function () {
  var params = new URLSearchParams(location.search);
  var id = params.get("instance_id") || "";
  var token = params.get("token");
  var img = document.getElementById("frame");
  var status = document.getElementById("status");
  if (!/^[0-9a-f]{8}$/.test(id)) {
    status.textContent = "render.html?instance_id=<8 hex characters>";
    return;
  }
  status.textContent = "instance " + id;
  function refresh() {
    var url = id + "/rendered/latest.png?r=" + Math.random();
    if (token) url += "&token=" + encodeURIComponent(token);
    img.src = url;
  }
  refresh();
  setInterval(refresh, 500);
})();
</script>
</body>
</html>
)";

}  // namespace

HttpReply GymServerSession::handle(const HttpRequest& req) {
  const auto segs = segments(req.target);
  const Route* route = nullptr;
  std::string id;
  bool known_path = false;
  for (const auto& r : routes()) {
    if (r.pattern.size() != segs.size()) continue;
    std::string i2;
    bool ok = true;
    for (std::size_t k = 0; k < segs.size() && ok; ++k) {
      if (r.pattern[k] == "*") i2 = segs[k];
      else ok = r.pattern[k] == segs[k];
    }
    if (!ok) continue;
    known_path = true;
    if (req.method == r.method || (req.method == "HEAD" && std::string(r.method) == "GET")) {
      route = &r;
      id = i2;
      break;
    }
    if (req.method == "OPTIONS") {
      HttpReply o;
      o.status = 200;
      o.content_type = "text/html; charset=utf-8";
      o.headers.emplace_back("Allow", std::string(r.method) == "GET" ? "HEAD, OPTIONS, GET" : "POST, OPTIONS");
      return o;
    }
  }
  if (!route) {
    if (known_path) return error_reply(405, "The method is not allowed for the requested URL.");
    return error_reply(404, "Not Found: " + req.target.substr(0, req.target.find('?')));
  }
  Ctx c{farm_, reg_, opt_, req, std::move(id), std::nullopt};
  try {
    return route->handler(c);
  } catch (const Fail& f) {
    return f.reply;
  } catch (const client::ClientError& e) {
    if (e.code() == ErrorCode::UnknownInstance) {  // reaped (--idle-ttl) or its worker crashed
      reg_.remove(c.id);
      return unknown_id(c.id);
    }
    if (e.code() == ErrorCode::CapacityExhausted || e.code() == ErrorCode::Overloaded)
      return error_reply(503, e.error().message);
    return error_reply(500, e.error().message);
  } catch (const std::exception& e) {
    return error_reply(500, e.what());
  }
}

HttpReply gym_server_file(const GymServerOptions& opt, const HttpRequest& req) {
  if (req.method != "GET" && req.method != "HEAD") {
    HttpReply r = error_reply(405, "only GET and HEAD are served here");
    r.headers.emplace_back("Allow", "GET, HEAD");
    return r;
  }
  const auto segs = decoded_segments(req.target);
  if (!segs) return not_found();
  const std::string path = req.target.substr(0, req.target.find('?'));
  const bool slash = !path.empty() && path.back() == '/';
  const auto& s = *segs;
  if (s.empty() || (s.size() == 1 && s[0] == "index.html")) {
    std::vector<std::string> names{"render.html"};
    const Fd root = open_dir(opt.root, {}, false);
    if (root) {
      for (auto& n : list_dir(root.get(), [](const std::string& n) { return is_gym_server_id(n); })) {
        names.push_back(n + "/");
      }
    }
    return listing("/", names, false);
  }
  if (s.size() == 1 && s[0] == "render.html") {
    HttpReply r;
    r.content_type = "text/html; charset=utf-8";
    r.body = kRenderPage;
    return r;
  }
  if (!is_gym_server_id(s[0])) return not_found();
  if (s.size() == 1) {
    if (!open_dir(opt.root, {s[0]}, false)) return not_found();
    if (!slash) {
      HttpReply r;
      r.status = 301;
      r.headers.emplace_back("Location", "/" + s[0] + "/");
      return r;
    }
    return listing(path, {"rendered/", "simulation/"}, false);
  }
  const bool rendered = s[1] == "rendered";
  if (!rendered && s[1] != "simulation") return not_found();
  if (s.size() > 3) return not_found();
  const Fd dir = open_dir(opt.root, {s[0], s[1]}, false);
  if (!dir) return not_found();
  if (s.size() == 2) {
    if (!slash) {
      HttpReply r;
      r.status = 301;
      r.headers.emplace_back("Location", "/" + s[0] + "/" + s[1] + "/");
      return r;
    }
    return listing(path, list_dir(dir.get(), rendered ? is_frame_name : is_plain_name), rendered);
  }
  if (!(rendered ? is_frame_name(s[2]) : is_plain_name(s[2]))) return not_found();
  return serve_file(dir.get(), s[2]);
}

}  // namespace gymfarm::frontends
