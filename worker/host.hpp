#pragma once
// The embedded interpreter and the bridge to host.py (the env host, compiled into the binary):
// requests in, MessagePack replies or error bodies out. Nothing here throws at the request boundary.
#include <array>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <pybind11/pybind11.h>

#include "worker/args.hpp"

namespace gymfarm::worker {

namespace py = pybind11;

struct Reply {
  std::string_view status;  // protocol::kStatusOk or kStatusErr
  std::string body;
  // A step laid out raw in the area handle() was given (shm/slab.hpp "StepRaw"): its length, with
  // body empty. 0 for every other reply.
  std::size_t raw = 0;
};

// The last resort when even describing an error failed: a fixed, valid error body.
std::string fallback_error_body();

// An error body; never throws (a message that is not valid UTF-8 is decoded with replacements).
// Needs the interpreter (and the GIL).
std::string error_body(std::string_view code, const std::string& message, py::dict details = py::dict());

// Starts the interpreter: no signal handlers of its own; `--python` (args.python) decides
// sys.prefix, so a venv's python gives the venv's site-packages.
void init_python(const Args& args);

// Hidden, like pybind11's own types that it holds (a static library: no symbol of it is exported).
class __attribute__((visibility("hidden"))) Host {
 public:
  // Runs host.py as the module gymfarm_host and imports args.imports (`--import`). Throws
  // py::error_already_set when host.py or an import fails.
  explicit Host(const Args& args);

  // What a make would refuse about the env id alone (host.py check_env_id): nothing, or its
  // message, kind and Gymnasium error class. Never throws: an id that is not UTF-8, or any other
  // trouble, is left for the make itself to report.
  std::optional<std::array<std::string, 3>> check_env_id(const std::string& env_id, bool aliases, bool strict_kwargs);

  // In a worker forked from the zygote: fresh random state (the zygote's would be shared).
  void after_fork();

  // The body of the worker's `ready`: its pid, env ids and Python version.
  std::string ready_info();

  // Never throws: whatever a request or the env's result holds, the answer is a reply or an error.
  // A step given `raw` (a slab's reply area) lays its reply out there when it can (Reply::raw).
  Reply handle(std::string_view v, std::string_view instance, std::string_view body, std::span<char> raw = {});

  // Closes every env (at the end of serving); what an env's close raises is printed, not thrown.
  void close_env();

 private:
  Reply dispatch(std::string_view v, std::string_view instance, std::string_view body, std::span<char> raw);
  // One env's step as host.py's step answers it, with env.step called from C++ whenever host.py
  // would only copy its result (docs/architecture.md "Worker"): then `result` holds the env's
  // 5-tuple, checked; otherwise `dict` holds host.py's reply (its step, or finish_step after the
  // env stepped). Throws what host.py's step would raise.
  struct Stepped {
    py::object result, dict;
    bool terminated = false, truncated = false;
  };
  Stepped step_one(py::handle inst, py::handle action, py::handle autoreset, py::handle processed);
  bool converted_space(py::handle space);
  static std::string pack_step(const Stepped& s);
  // pack_step's reply laid out raw in `area` (shm/slab.hpp): its length, or 0 when the observation
  // is not an array sent from its buffer, the reply does not fit, or its tail cannot be packed
  // (pack_step then decides). Throws what packing the reward and info raises from Python.
  static std::size_t pack_step_raw(const Stepped& s, std::span<char> area);
  // host.py's step_vec reply, each env stepped by step_one.
  py::object step_vec(py::handle insts, py::handle actions, py::handle autoreset);
  // The protocol error for a Python exception: host.py's error_map decides (one place for both
  // single requests and the per-env errors of step_vec).
  std::string python_error(py::error_already_set& e);
  // host.py's error_map of a fetched Python error (its value and traceback); may throw.
  py::object error_map_of(py::error_already_set& e);

  py::module_ module_;
  // host.py's objects the C++ step uses, looked up once: the instances' table, the warnings shown
  // since the last reply, finish_step and the action spaces whose actions it converts.
  py::object envs_, warned_, finish_step_, converted_spaces_;
  // Action space types seen, and whether each is one of CONVERTED_SPACES (converted_space).
  std::vector<std::pair<py::object, bool>> space_kinds_;
};

}  // namespace gymfarm::worker
