// gymfarm-worker: one process, one embedded CPython, its Gymnasium envs.
// Started by the broker; see docs/protocol.md "Broker ⇄ worker" and worker/README.md.
// With --zygote it is the pre-imported parent the broker asks for workers: it loads Python, numpy,
// gymnasium and the --import modules once, then forks a worker per request.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <pybind11/embed.h>
#include <charconv>

#include "protocol/codec.hpp"
#include "protocol/frames.hpp"
#include "protocol/token.hpp"
#include "transport/frames.hpp"
#include "transport/stream.hpp"
#include "worker/host_source.hpp"
#include "worker/py_codec.hpp"
#include "worker/slab_server.hpp"

namespace py = pybind11;
namespace verb = gymfarm::protocol::verb;
using gymfarm::transport::view;

namespace {

struct Args {
  std::string backend;  // ZeroMQ endpoint for heartbeats
  std::string link;     // unix socket path for requests and replies (transport/stream.hpp)
  std::string identity;
  std::string python;
  std::vector<std::string> imports;
  pid_t parent = 0;
  unsigned long long memory_limit = 0;  // bytes, for error messages (the OS enforces it)
  unsigned long long cpu_limit = 0;     // seconds; set by the zygote's children themselves
  long spin_us = 0;                     // busy-poll this long for the next request before sleeping
  bool zygote = false;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "gymfarm-worker: %s\n"
               "usage: gymfarm-worker --backend ENDPOINT --link PATH (--identity ID | --zygote) [--parent PID] "
               "[--python PATH] [--import MODULE]... [--memory-limit BYTES] [--cpu-limit SECONDS] "
               "[--spin-us N]\n"
               "Started by `gymfarm start`; not meant to be run by hand.\n",
               msg);
  std::exit(2);  // NOLINT(concurrency-mt-unsafe): arguments are parsed before any thread starts
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + k).c_str());
      return argv[++i];
    };
    if (k == "--backend") a.backend = value();
    else if (k == "--link") a.link = value();
    else if (k == "--identity") a.identity = value();
    else if (k == "--spin-us") a.spin_us = std::stol(value());
    else if (k == "--python") a.python = value();
    else if (k == "--import") a.imports.push_back(value());
    else if (k == "--parent") a.parent = static_cast<pid_t>(std::stol(value()));
    else if (k == "--memory-limit") a.memory_limit = std::stoull(value());
    else if (k == "--cpu-limit") a.cpu_limit = std::stoull(value());
    else if (k == "--zygote") a.zygote = true;
    else usage(("unknown option " + k).c_str());
  }
  if (a.backend.empty() || a.link.empty() || (a.identity.empty() && !a.zygote)) {
    usage("--backend, --link and --identity are required");
  }
  return a;
}

bool parent_gone(pid_t parent) { return parent != 0 && getppid() != parent; }

// Closes every file descriptor above stderr: whatever the process inherited (the broker's
// listening sockets, its other sockets and pipes) must not reach env code, which could answer on
// them or keep them bound after the farm is gone. close_range(2), else the entries of /proc/self/fd.
void close_inherited_fds() {
  if (::close_range(STDERR_FILENO + 1, ~0U, 0) == 0) return;
  std::vector<int> open;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      int fd = -1;
      std::from_chars(e->d_name, e->d_name + std::strlen(e->d_name), fd);
      if (fd > STDERR_FILENO && fd != ::dirfd(d)) open.push_back(fd);
    }
    ::closedir(d);
  } else {
    for (int fd = STDERR_FILENO + 1; fd < 65536; ++fd) open.push_back(fd);
  }
  for (int fd : open) ::close(fd);
}

using HbClock = std::chrono::steady_clock;
// When the worker last sent a reply on its link (HbClock ticks): the broker takes any reply as a
// heartbeat, so a worker that keeps answering sends none.
std::atomic<HbClock::rep> g_last_reply{0};

// The heartbeat thread's controls: stop, and an eventfd that wakes it so that stopping does not
// wait out a period.
struct HeartbeatControl {
  std::atomic<bool> stop{false};
  int wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
};

// Liveness: a C++ thread with its own socket; it never takes the GIL, so a busy env does not
// silence it. Progress is the broker's business (deadlines). It beats every 100 ms until the
// broker, answering a heartbeat, names another period (["hb", milliseconds]): the period grows
// with the pool's size, so the pool's heartbeats into the broker stay bounded.
void heartbeat_loop(zmq::context_t& ctx, const Args& args, HeartbeatControl& ctl) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  gymfarm::transport::configure(s);
  s.set(zmq::sockopt::routing_id, args.identity + "#hb");
  s.connect(args.backend);
  auto period = std::chrono::milliseconds(100);
  auto next = HbClock::now();
  gymfarm::transport::Frames in;
  while (!ctl.stop.load()) {
    if (parent_gone(args.parent)) _exit(0);
    auto now = HbClock::now();
    if (now >= next) {
      const HbClock::time_point replied{HbClock::duration(g_last_reply.load())};
      if (now - replied >= period) gymfarm::transport::send(s, std::vector<std::string_view>{verb::kHeartbeat});
      next = now + period;
    }
    zmq::pollitem_t items[] = {{s.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, ctl.wake_fd, ZMQ_POLLIN, 0}};
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - now);
    try {  // at most 500 ms, so that a parent that is gone is seen
      zmq::poll(items, 2, std::clamp(wait, std::chrono::milliseconds(0), std::chrono::milliseconds(500)));
    } catch (const zmq::error_t&) {  // EINTR
    }
    while (gymfarm::transport::recv(s, in)) {
      if (in.size() != 2 || view(in[0]) != verb::kHeartbeat) continue;
      long ms = 0;
      const auto text = view(in[1]);
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), ms);
      if (ec != std::errc() || end != text.data() + text.size() || ms < 10 || ms > 600000) continue;
      period = std::chrono::milliseconds(ms);
      next = std::min(next, HbClock::now() + period);
    }
  }
}

struct Reply {
  std::string_view status;
  std::string body;
};

// The last resort when even describing an error failed: a fixed, valid error body.
std::string fallback_error_body() {
  std::string out;
  gymfarm::protocol::Map m{{"code", gymfarm::protocol::Value("env_error")},
                           {"message", gymfarm::protocol::Value("the worker could not encode its reply")},
                           {"details", gymfarm::protocol::Value(gymfarm::protocol::Map{})}};
  gymfarm::protocol::encode_to(out, gymfarm::protocol::Value(std::move(m)));
  return out;
}

// An error body; never throws (a message that is not valid UTF-8 is decoded with replacements).
std::string error_body(std::string_view code, const std::string& message, py::dict details = py::dict()) {
  try {
    py::dict e;
    e["code"] = py::str(std::string(code));
    py::object text = py::reinterpret_steal<py::object>(
        PyUnicode_DecodeUTF8(message.data(), static_cast<Py_ssize_t>(message.size()), "replace"));
    if (!text) throw py::error_already_set();
    e["message"] = text;
    e["details"] = details;
    return gymfarm::worker::pack(e);
  } catch (...) {
    PyErr_Clear();
    return fallback_error_body();
  }
}

class Host {
 public:
  explicit Host(const Args& args) {
    module_ = py::module_::create_extension_module("gymfarm_host", nullptr, new py::module_::module_def);
    py::exec(gymfarm::worker::kHostSource, module_.attr("__dict__"));
    py::module_::import("sys").attr("modules")["gymfarm_host"] = module_;
    py::list mods;
    for (const auto& m : args.imports) mods.append(m);
    module_.attr("import_modules")(mods);
    module_.attr("MEMORY_LIMIT") = args.memory_limit;
    module_.attr("encode_check") = py::cpp_function([](py::handle o) { (void)gymfarm::worker::pack(o); });
  }

  // What a make would refuse about the env id alone (host.py check_env_id): nothing, or its
  // message, kind and Gymnasium error class. Never throws: an id that is not UTF-8, or any other
  // trouble, is left for the make itself to report.
  std::optional<std::array<std::string, 3>> check_env_id(const std::string& env_id, bool aliases, bool strict_kwargs) {
    try {
      py::object r = module_.attr("check_env_id")(py::str(env_id), aliases, strict_kwargs);
      if (r.is_none()) return std::nullopt;
      auto t = r.cast<py::tuple>();
      return std::array<std::string, 3>{t[0].cast<std::string>(), t[1].cast<std::string>(), t[2].cast<std::string>()};
    } catch (const std::exception&) {
      PyErr_Clear();
      return std::nullopt;
    }
  }

  // In a worker forked from the zygote: fresh random state (the zygote's would be shared).
  void after_fork() { module_.attr("after_fork")(); }

  std::string ready_info() {
    py::dict info;
    info["pid"] = static_cast<long long>(getpid());
    info["env_ids"] = module_.attr("env_ids")();
    info["python"] = py::module_::import("sys").attr("version");
    return gymfarm::worker::pack(info);
  }

  // Never throws: whatever a request or the env's result holds, the answer is a reply or an error.
  Reply handle(std::string_view v, std::string_view instance, std::string_view body) {
    try {
      return dispatch(v, instance, body);
    } catch (py::error_already_set& e) {
      return {gymfarm::protocol::kStatusErr, python_error(e)};
    } catch (const std::exception& e) {
      return {gymfarm::protocol::kStatusErr, error_body("bad_request", e.what())};
    } catch (...) {
      return {gymfarm::protocol::kStatusErr, fallback_error_body()};
    }
  }

 private:
  Reply dispatch(std::string_view v, std::string_view instance, std::string_view body) {
    py::object req = gymfarm::worker::unpack(body);
    if (!py::isinstance<py::dict>(req))
      return {gymfarm::protocol::kStatusErr, error_body("bad_request", "the body must be a map")};
    py::dict d = req;
    const py::str inst(instance.data(), instance.size());
    auto get = [&](const char* key) -> py::object { return d.contains(key) ? py::object(d[key]) : py::none(); };
    py::object result;
    if (v == verb::kStep) {
      result = module_.attr("step")(inst, get("action"), get("autoreset"), get("processed"));
    } else if (v == verb::kStepVec) {
      result = module_.attr("step_vec")(get("instances"), get("actions"), get("autoreset"));
    } else if (v == verb::kReset) {
      result = module_.attr("reset")(inst, get("seed"), get("options"));
    } else if (v == verb::kMake) {
      result = module_.attr("make")(inst, get("env_id"), get("kwargs"), get("strict"), get("aliases"));
      result["instance_id"] = py::str(std::string(instance));
    } else if (v == verb::kClose) {
      result = module_.attr("close")(inst);
    } else if (v == verb::kSpaces) {
      result = module_.attr("spaces_of")(inst);
    } else if (v == verb::kSample) {
      py::object which = get("space");
      result = which.is_none() ? module_.attr("sample")(inst) : module_.attr("sample")(inst, which);
    } else if (v == verb::kRender) {
      result = module_.attr("render")(inst);
    } else if (v == verb::kCall) {
      result = module_.attr("call")(inst, get("name"), get("args"), get("kwargs"), get("outs"));
    } else if (v == verb::kGetAttr) {
      result = module_.attr("get_attr")(inst, get("name"));
    } else if (v == verb::kSetAttr) {
      result = module_.attr("set_attr")(inst, get("name"), get("value"));
    } else if (v == verb::kMonitor) {
      result = module_.attr("monitor")(inst, get("op"), get("directory"), get("video"), get("name"));
    } else {
      return {gymfarm::protocol::kStatusErr, error_body("bad_request", "unknown verb '" + std::string(v) + "'")};
    }
    std::string out;
    try {
      out = gymfarm::worker::pack(result);
    } catch (const std::runtime_error& e) {  // what the env returned cannot travel: its error
      return {gymfarm::protocol::kStatusErr,
              error_body("env_error", std::string("the reply cannot be encoded: ") + e.what())};
    }
    return {gymfarm::protocol::kStatusOk, std::move(out)};
  }

 public:
  void close_env() {
    try {
      module_.attr("close_all")();
    } catch (py::error_already_set& e) {
      std::fprintf(stderr, "[gymfarm-worker] env.close() raised: %s\n", e.what());
    }
  }

 private:
  // The protocol error for a Python exception: host.py's error_map decides (one place for both
  // single requests and the per-env errors of step_vec).
  std::string python_error(py::error_already_set& e) {
    try {
      // An error raised in C (packing a reply, say) has no traceback: pass None, not a null handle
      // (which pybind11 refuses with a cast_error).
      py::object value = e.value() ? py::reinterpret_borrow<py::object>(e.value()) : py::none();
      py::object trace = e.trace() ? py::reinterpret_borrow<py::object>(e.trace()) : py::none();
      return gymfarm::worker::pack(module_.attr("error_map")(value, trace));
    } catch (py::error_already_set& again) {
      return error_body("env_error", std::string("the error could not be described: ") + again.what());
    } catch (const std::exception& again) {
      return error_body("env_error", std::string("the error could not be described: ") + again.what());
    } catch (...) {
      return fallback_error_body();
    }
  }

  py::module_ module_;
};

void init_python(const Args& args) {
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.install_signal_handlers = 0;  // SIGTERM and SIGINT keep their default action
  config.parse_argv = 0;
  if (!args.python.empty()) {
    // The interpreter path decides sys.prefix: a venv's python gives the venv's site-packages.
    PyConfig_SetBytesString(&config, &config.program_name, args.python.c_str());
    PyConfig_SetBytesString(&config, &config.executable, args.python.c_str());
  }
  py::initialize_interpreter(&config, 0, nullptr, false);
}

// Serves requests until the broker says bye or goes away. The heartbeat thread is already running.
void serve(const Args& args, Host& host) {
  const std::string info = host.ready_info();
  const int fd = gymfarm::transport::connect_unix(args.link);
  if (fd < 0) {
    std::fprintf(stderr, "[gymfarm-worker] cannot reach the broker at %s\n", args.link.c_str());
    return;
  }
  gymfarm::transport::StreamConn link(fd, 0);
  auto send = [&](const std::vector<std::string_view>& frames) {
    if (!link.send(frames)) return false;
    g_last_reply.store(HbClock::now().time_since_epoch().count());
    while (link.wants_write()) {  // a large reply: wait for the broker to drain it
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 500) < 0 || parent_gone(args.parent) || !link.flush()) return false;
    }
    return true;
  };
  if (!send({verb::kLink, args.identity}) || !send({verb::kReady, info})) return;

  using Event = gymfarm::worker::SlabServer::Event;
  const auto spin = std::chrono::microseconds(args.spin_us);
  link.accept_fds(true);  // slabs come from the broker with their descriptors
  gymfarm::worker::SlabServer slabs;
  const auto handle_slab = [&host](std::string_view v, std::string_view instance, std::string_view body) {
    Reply r = host.handle(v, instance, body);
    return gymfarm::worker::SlabReply{r.status == gymfarm::protocol::kStatusOk, std::move(r.body)};
  };
  gymfarm::transport::Frames in;
  while (true) {
    Event got;
    {
      py::gil_scoped_release nogil;
      if (slabs.empty()) {
        using Read = gymfarm::transport::StreamConn::Read;
        const Read r = link.wait(in, spin, std::chrono::milliseconds(500));
        got = r == Read::Message    ? Event::Message
              : r == Read::Closed   ? Event::Closed
              : r == Read::TooLarge ? Event::TooLarge
                                    : Event::Nothing;
      } else {
        got = slabs.wait(link, in, spin, std::chrono::milliseconds(500));
      }
    }
    if (got == Event::Closed || got == Event::TooLarge || parent_gone(args.parent)) break;
    if (got == Event::Slab) {
      // The broker sees slab answers as it sees replies (a scan every 10 ms): no heartbeat needed.
      if (slabs.serve(handle_slab) > 0) g_last_reply.store(HbClock::now().time_since_epoch().count());
      continue;
    }
    if (got != Event::Message || in.empty()) continue;
    const auto v = view(in[0]);
    if (v == verb::kBye) break;
    if (v == verb::kSlab) {  // [slab, instance] + memfd and doorbell: for the make that follows
      const int memfd = link.take_fd();
      const int doorbell = link.take_fd();
      if (in.size() == 2) {
        slabs.on_grant(std::string(view(in[1])), memfd, doorbell);
      } else {
        if (memfd >= 0) ::close(memfd);
        if (doorbell >= 0) ::close(doorbell);
      }
      continue;
    }
    if (v == verb::kStepMany) {
      // [step_many, "", rid, (instance, body)*] -> [reply, rid, ok, (status, body)*]: the steps of a
      // step_batch for this worker's envs, in one message each way (--envs-per-worker)
      if (in.size() < 5 || (in.size() - 3) % 2 != 0) continue;
      std::vector<Reply> replies;
      replies.reserve((in.size() - 3) / 2);
      for (std::size_t i = 3; i + 1 < in.size(); i += 2)
        replies.push_back(host.handle(verb::kStep, view(in[i]), view(in[i + 1])));
      std::vector<std::string_view> out{verb::kReply, view(in[2]), gymfarm::protocol::kStatusOk};
      for (const auto& r : replies) {
        out.push_back(r.status);
        out.push_back(r.body);
      }
      if (!send(out)) break;
      continue;
    }
    if (in.size() != 4) continue;
    const std::string instance(view(in[1]));
    Reply r;
    if (v == verb::kSpilled) {  // the reply a slab could not hold
      if (auto kept = slabs.take_spilled(instance)) {
        r = {kept->ok ? gymfarm::protocol::kStatusOk : gymfarm::protocol::kStatusErr, std::move(kept->body)};
      } else {
        r = {gymfarm::protocol::kStatusErr, error_body("bad_request", "no spilled reply is kept for this instance")};
      }
    } else {
      r = host.handle(v, instance, view(in[3]));
    }
    if (v == verb::kMake) slabs.made(instance, r.status == gymfarm::protocol::kStatusOk);
    if (v == verb::kClose) {
      slabs.closed(instance, error_body("unknown_instance", "instance '" + instance + "' was closed"));
    }
    if (!send({verb::kReply, view(in[2]), r.status, r.body})) break;
  }
  host.close_env();
}

// Ends the process without finalizing the interpreter: env libraries may hang in atexit handlers;
// the OS frees the rest.
[[noreturn]] void finish(HeartbeatControl& hbc, std::thread& hb, int rc) {
  hbc.stop = true;
  const uint64_t one = 1;
  if (hbc.wake_fd >= 0 && ::write(hbc.wake_fd, &one, sizeof one) < 0) {
    // it still sees `stop` within 500 ms
  }
  {
    py::gil_scoped_release nogil;
    hb.join();
  }
  std::fflush(nullptr);
  _exit(rc);
}

// In a grandchild of the zygote: becomes a worker like a freshly started one.
[[noreturn]] void become_worker(Args args, Host& host, const std::string& identity, pid_t intermediate, int reply_fd) {
  // Wait until the intermediate process has exited and the broker (a child subreaper) adopted us;
  // only then does PR_SET_PDEATHSIG refer to the broker.
  for (int i = 0; i < 20000 && getppid() == intermediate; ++i) usleep(100);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != args.parent) _exit(0);
  // The zygote closed what it inherited when it started; of its own descriptors only the reply pipe
  // and the command pipe (its stdin) are not Python's, and neither is this worker's.
  ::close(reply_fd);
  if (int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC); null >= 0) {
    dup2(null, STDIN_FILENO);  // the zygote's command pipe is not ours
    ::close(null);
  } else {
    ::close(STDIN_FILENO);
  }
  if (args.memory_limit) {
    rlimit r{args.memory_limit, args.memory_limit};
    setrlimit(RLIMIT_AS, &r);
  }
  if (args.cpu_limit) {
    rlimit r{args.cpu_limit, args.cpu_limit + 2};  // SIGXCPU at the soft limit, SIGKILL 2 s later
    setrlimit(RLIMIT_CPU, &r);
  }
  PyOS_AfterFork_Child();
  prctl(PR_SET_NAME, "gf-worker");  // its argv is the zygote's; ps -o comm tells them apart
  args.identity = identity;
  zmq::context_t ctx(1);
  HeartbeatControl hbc;
  std::thread hb;
  {
    py::gil_scoped_release nogil;
    hb = std::thread(heartbeat_loop, std::ref(ctx), std::cref(args), std::ref(hbc));
  }
  try {
    host.after_fork();
  } catch (py::error_already_set& e) {
    std::fprintf(stderr, "[gymfarm-worker] after fork: %s\n", e.what());
  }
  serve(args, host);
  finish(hbc, hb, 0);
}

// The zygote's answer to "check KEY HEX-ENV-ID ALIASES STRICT-KWARGS" (the broker asks it for a make that found
// the pool at --max-workers): "check KEY ok", or "check KEY bad MESSAGE KIND ERROR" in hex.
std::string check_answer(Host& host, const std::string& args) {
  std::vector<std::string> f;
  for (std::size_t at = 0; at <= args.size();) {
    const auto sp = std::min(args.find(' ', at), args.size());
    f.push_back(args.substr(at, sp - at));
    at = sp + 1;
  }
  if (f.size() != 4) return "check " + f[0] + " ok\n";  // a line it cannot read: the make decides
  const auto env_id = gymfarm::protocol::from_hex(f[1]);
  const auto bad = env_id ? host.check_env_id(*env_id, f[2] != "0", f[3] == "1") : std::nullopt;
  if (!bad) return "check " + f[0] + " ok\n";
  using gymfarm::protocol::to_hex;
  return "check " + f[0] + " bad " + to_hex((*bad)[0]) + " " + to_hex((*bad)[1]) + " " + to_hex((*bad)[2]) + "\n";
}

// The zygote: reads "spawn IDENTITY" lines on stdin, answers "IDENTITY PID" (PID 0: the fork
// failed) on the reply pipe. It has no threads and no ZeroMQ context, so forking is safe. Each
// worker is forked twice so that it is re-parented to the broker, which reaps it and sees its exit
// status as it does for fresh workers.
[[noreturn]] void zygote(const Args& args, Host& host) {
  // stdout is the reply pipe; whatever envs print goes to stderr instead
  const int reply_fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
  dup2(STDERR_FILENO, STDOUT_FILENO);
  auto answer = [&](const std::string& line) {
    if (::write(reply_fd, line.data(), line.size()) < 0) _exit(0);
  };
  answer("ready " + std::to_string(getpid()) + "\n");
  char buf[512];
  std::string pending;
  while (true) {
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n <= 0) _exit(0);  // the broker closed the pipe or is gone
    pending.append(buf, static_cast<std::size_t>(n));
    std::size_t eol;
    while ((eol = pending.find('\n')) != std::string::npos) {
      const std::string line = pending.substr(0, eol);
      pending.erase(0, eol + 1);
      if (line.rfind("check ", 0) == 0) {  // -> "check KEY ok|bad ..."
        answer(check_answer(host, line.substr(6)));
        continue;
      }
      if (line.rfind("spawn ", 0) != 0) continue;
      const std::string identity = line.substr(6);
      PyOS_BeforeFork();
      const pid_t mid = fork();
      if (mid == 0) {
        const pid_t self = getpid();
        const pid_t w = fork();
        if (w == 0) become_worker(args, host, identity, self, reply_fd);
        answer(identity + " " + std::to_string(w > 0 ? w : 0) + "\n");
        _exit(0);
      }
      PyOS_AfterFork_Parent();
      if (mid < 0) {
        answer(identity + " 0\n");
      } else {
        int status = 0;
        waitpid(mid, &status, 0);
      }
    }
  }
}

}  // namespace

int run(int argc, char** argv) {
  // First of all, before any thread, socket or Python: nothing but stdio survives from the parent.
  close_inherited_fds();
  const Args args = parse(argc, argv);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (parent_gone(args.parent)) return 0;

  if (args.zygote) {
    prctl(PR_SET_NAME, "gf-zygote");
    // Python, numpy, gymnasium and the operator's modules, loaded once; no threads before fork.
    // NOLINTNEXTLINE(concurrency-mt-unsafe): before any thread; no BLAS pool to lose across fork
    setenv("OPENBLAS_NUM_THREADS", "1", 0);
    try {
      init_python(args);
      auto host = std::make_unique<Host>(args);
      zygote(args, *host);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "[gymfarm-worker] the zygote cannot start: %s\n", e.what());
      std::fflush(nullptr);
      _exit(4);
    }
  }

  // Heartbeats begin before Python starts, so a worker stopped or stuck during start-up is noticed
  // after the heartbeat timeout rather than the (long) start-up timeout.
  zmq::context_t ctx(1);
  HeartbeatControl hbc;
  std::thread hb(heartbeat_loop, std::ref(ctx), std::cref(args), std::ref(hbc));
  try {
    init_python(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[gymfarm-worker] cannot start Python: %s\n", e.what());
    std::fflush(nullptr);
    _exit(3);
  }
  std::unique_ptr<Host> host;
  try {
    host = std::make_unique<Host>(args);
  } catch (py::error_already_set& e) {
    std::fprintf(stderr, "[gymfarm-worker] start-up failed: %s\n", e.what());
    std::fflush(nullptr);
    _exit(4);
  }
  serve(args, *host);
  finish(hbc, hb, 0);
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[gymfarm-worker] %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "[gymfarm-worker] unexpected error\n");
  }
  return 1;
}
