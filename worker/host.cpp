#include "worker/host.hpp"

#include <unistd.h>

#include <cstdio>
#include <stdexcept>

#include <pybind11/embed.h>

#include "protocol/codec.hpp"
#include "protocol/frames.hpp"
#include "worker/host_source.hpp"
#include "worker/py_codec.hpp"

namespace gymfarm::worker {

namespace verb = protocol::verb;

std::string fallback_error_body() {
  std::string out;
  gymfarm::protocol::Map m{{"code", gymfarm::protocol::Value("env_error")},
                           {"message", gymfarm::protocol::Value("the worker could not encode its reply")},
                           {"details", gymfarm::protocol::Value(gymfarm::protocol::Map{})}};
  gymfarm::protocol::encode_to(out, gymfarm::protocol::Value(std::move(m)));
  return out;
}

std::string error_body(std::string_view code, const std::string& message, py::dict details) {
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

Host::Host(const Args& args) {
  module_ = py::module_::create_extension_module("gymfarm_host", nullptr, new py::module_::module_def);
  py::exec(gymfarm::worker::kHostSource, module_.attr("__dict__"));
  py::module_::import("sys").attr("modules")["gymfarm_host"] = module_;
  py::list mods;
  for (const auto& m : args.imports) mods.append(m);
  module_.attr("import_modules")(mods);
  module_.attr("MEMORY_LIMIT") = args.memory_limit;
  module_.attr("encode_check") = py::cpp_function([](py::handle o) { (void)gymfarm::worker::pack(o); });
  envs_ = module_.attr("_envs");
  warned_ = module_.attr("_warned");
  finish_step_ = module_.attr("finish_step");
  converted_spaces_ = module_.attr("CONVERTED_SPACES");
}

std::optional<std::array<std::string, 3>> Host::check_env_id(const std::string& env_id, bool aliases,
                                                             bool strict_kwargs) {
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

void Host::after_fork() { module_.attr("after_fork")(); }

std::string Host::ready_info() {
  py::dict info;
  info["pid"] = static_cast<long long>(getpid());
  info["env_ids"] = module_.attr("env_ids")();
  info["python"] = py::module_::import("sys").attr("version");
  return gymfarm::worker::pack(info);
}

Reply Host::handle(std::string_view v, std::string_view instance, std::string_view body) {
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

namespace {

// Whether host.py's _mark_tuples could find a tuple in this info: a tuple within dicts and lists,
// to tuple_paths' depth. Containers of other kinds (dict and list subclasses) count as "could":
// host.py decides those.
bool may_hold_tuple(PyObject* v, int depth) {
  if (depth > 32) return false;
  if (PyTuple_Check(v)) return true;
  const bool dict = PyDict_Check(v), list = PyList_Check(v);
  if (!dict && !list) return false;
  if (!PyDict_CheckExact(v) && !PyList_CheckExact(v)) return true;
  if (dict) {
    PyObject *k = nullptr, *x = nullptr;
    Py_ssize_t pos = 0;
    while (PyDict_Next(v, &pos, &k, &x))
      if (may_hold_tuple(x, depth + 1)) return true;
    return false;
  }
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v); ++i)
    if (may_hold_tuple(PyList_GET_ITEM(v, i), depth + 1)) return true;
  return false;
}

// The reply for what `pack` encodes, or the error of a result that cannot travel.
template <typename Pack>
Reply encoded(Pack&& pack) {
  try {
    return {gymfarm::protocol::kStatusOk, pack()};
  } catch (const std::runtime_error& e) {  // what the env returned cannot travel: its error
    return {gymfarm::protocol::kStatusErr,
            error_body("env_error", std::string("the reply cannot be encoded: ") + e.what())};
  }
}

}  // namespace

bool Host::fast_step(const py::str& inst, const py::dict& req, Reply& out, py::object& result) {
  PyObject* h = PyDict_GetItemWithError(envs_.ptr(), inst.ptr());
  if (h == nullptr) {
    if (PyErr_Occurred()) throw py::error_already_set();
    return false;  // host.py's step says which env is missing
  }
  py::object hosted = py::reinterpret_borrow<py::object>(h);
  PyObject* processed = PyDict_GetItemString(req.ptr(), "processed");
  if (processed != nullptr && processed != Py_None && processed != Py_False) return false;
  PyObject* autoreset = PyDict_GetItemString(req.ptr(), "autoreset");
  bool same_step = false;
  if (autoreset != nullptr && autoreset != Py_None) {
    if (!PyUnicode_Check(autoreset)) return false;
    if (PyUnicode_CompareWithASCIIString(autoreset, "same_step") == 0) {
      same_step = true;
    } else if (PyUnicode_CompareWithASCIIString(autoreset, "next_step") != 0 ||
               hosted.attr("needs_reset").ptr() != Py_False) {
      return false;  // an unknown mode, or a next_step reset: host.py's
    }
  }
  py::object env = hosted.attr("env");
  const int converted = PyObject_IsInstance(env.attr("action_space").ptr(), converted_spaces_.ptr());
  if (converted < 0) throw py::error_already_set();
  if (converted == 1) return false;
  PyObject* action = PyDict_GetItemString(req.ptr(), "action");
  py::object r = env.attr("step")(action != nullptr ? py::handle(action) : py::none());
  py::object mode = autoreset != nullptr ? py::reinterpret_borrow<py::object>(autoreset) : py::none();
  py::object shaped = processed != nullptr ? py::reinterpret_borrow<py::object>(processed) : py::none();
  const auto finish = [&] {
    result = finish_step_(hosted, r, mode, shaped);
    return true;
  };
  if (!PyTuple_CheckExact(r.ptr()) || PyTuple_GET_SIZE(r.ptr()) != 5) return finish();
  PyObject* info = PyTuple_GET_ITEM(r.ptr(), 4);
  const int terminated = PyObject_IsTrue(PyTuple_GET_ITEM(r.ptr(), 2));
  const int truncated = terminated < 0 ? -1 : PyObject_IsTrue(PyTuple_GET_ITEM(r.ptr(), 3));
  if (terminated < 0 || truncated < 0) {
    PyErr_Clear();
    return finish();  // raises there, as host.py's step would
  }
  const bool ended = terminated != 0 || truncated != 0;
  if ((same_step && ended) || PyList_GET_SIZE(warned_.ptr()) > 0 || !PyDict_CheckExact(info) || may_hold_tuple(info, 0))
    return finish();
  hosted.attr("needs_reset") = py::bool_(ended);
  out = encoded([&] {
    return gymfarm::worker::pack_map({{"obs", PyTuple_GET_ITEM(r.ptr(), 0)},
                                      {"reward", PyTuple_GET_ITEM(r.ptr(), 1)},
                                      {"terminated", terminated != 0 ? Py_True : Py_False},
                                      {"truncated", truncated != 0 ? Py_True : Py_False},
                                      {"info", info}});
  });
  return true;
}

Reply Host::dispatch(std::string_view v, std::string_view instance, std::string_view body) {
  py::object req = gymfarm::worker::unpack(body);
  if (!py::isinstance<py::dict>(req))
    return {gymfarm::protocol::kStatusErr, error_body("bad_request", "the body must be a map")};
  py::dict d = req;
  const py::str inst(instance.data(), instance.size());
  auto get = [&](const char* key) -> py::object { return d.contains(key) ? py::object(d[key]) : py::none(); };
  py::object result;
  if (v == verb::kStep) {
    Reply fast;
    if (!fast_step(inst, d, fast, result)) {
      result = module_.attr("step")(inst, get("action"), get("autoreset"), get("processed"));
    } else if (!fast.body.empty()) {
      return fast;
    }
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
  return encoded([&] { return gymfarm::worker::pack(result); });
}

void Host::close_env() {
  try {
    module_.attr("close_all")();
  } catch (py::error_already_set& e) {
    std::fprintf(stderr, "[gymfarm-worker] env.close() raised: %s\n", e.what());
  }
}

std::string Host::python_error(py::error_already_set& e) {
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

}  // namespace gymfarm::worker
