#include "worker/host.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>

#include <pybind11/embed.h>

#include "protocol/codec.hpp"
#include "protocol/frames.hpp"
#include "shm/slab.hpp"
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

Reply Host::handle(std::string_view v, std::string_view instance, std::string_view body, std::span<char> raw) {
  try {
    return dispatch(v, instance, body, raw);
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

namespace {

// The names a step looks up, made once (interned and kept for the life of the process).
struct StepNames {
  PyObject *action, *autoreset, *processed, *env, *action_space, *step, *needs_reset;
};
const StepNames& step_names() {
  static const StepNames n{PyUnicode_InternFromString("action"),       PyUnicode_InternFromString("autoreset"),
                           PyUnicode_InternFromString("processed"),    PyUnicode_InternFromString("env"),
                           PyUnicode_InternFromString("action_space"), PyUnicode_InternFromString("step"),
                           PyUnicode_InternFromString("needs_reset")};
  return n;
}

py::object attr(py::handle o, PyObject* name) {
  PyObject* v = PyObject_GetAttr(o.ptr(), name);
  if (v == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(v);
}

// A request's field, or None when it has none.
py::object field(const py::dict& d, PyObject* key) {
  PyObject* v = PyDict_GetItemWithError(d.ptr(), key);
  if (v == nullptr && PyErr_Occurred()) throw py::error_already_set();
  return v == nullptr ? py::none() : py::reinterpret_borrow<py::object>(v);
}

}  // namespace

bool Host::converted_space(py::handle space) {
  // isinstance against CONVERTED_SPACES, remembered by the space's type (a few hundred ns a step
  // otherwise); the types are kept, so an address is never another type's.
  PyTypeObject* t = Py_TYPE(space.ptr());
  for (const auto& [type, converted] : space_kinds_)
    if (type.ptr() == reinterpret_cast<PyObject*>(t)) return converted;
  const int converted = PyObject_IsInstance(space.ptr(), converted_spaces_.ptr());
  if (converted < 0) throw py::error_already_set();
  if (space_kinds_.size() < 16)
    space_kinds_.emplace_back(py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(t)), converted == 1);
  return converted == 1;
}

Host::Stepped Host::step_one(py::handle inst, py::handle action, py::handle autoreset, py::handle processed) {
  Stepped out;
  const auto by_host_py = [&] {
    out.dict = module_.attr("step")(inst, action, autoreset, processed);
    return std::move(out);
  };
  if (!PyUnicode_Check(inst.ptr())) return by_host_py();
  PyObject* h = PyDict_GetItemWithError(envs_.ptr(), inst.ptr());
  if (h == nullptr) {
    if (PyErr_Occurred()) throw py::error_already_set();
    return by_host_py();  // host.py's step says which env is missing
  }
  py::object hosted = py::reinterpret_borrow<py::object>(h);
  if (!processed.is_none() && processed.ptr() != Py_False) return by_host_py();
  bool same_step = false;
  if (!autoreset.is_none()) {
    if (!PyUnicode_Check(autoreset.ptr())) return by_host_py();
    if (PyUnicode_CompareWithASCIIString(autoreset.ptr(), "same_step") == 0) {
      same_step = true;
    } else if (PyUnicode_CompareWithASCIIString(autoreset.ptr(), "next_step") != 0 ||
               attr(hosted, step_names().needs_reset).ptr() != Py_False) {
      return by_host_py();  // an unknown mode, or a next_step reset
    }
  }
  const StepNames& names = step_names();
  py::object env = attr(hosted, names.env);
  if (converted_space(attr(env, names.action_space))) return by_host_py();
  PyObject* stepped = PyObject_CallMethodOneArg(env.ptr(), names.step, action.ptr());
  if (stepped == nullptr) throw py::error_already_set();
  py::object r = py::reinterpret_steal<py::object>(stepped);
  const auto finish = [&] {
    out.dict = finish_step_(hosted, r, autoreset, processed);
    return std::move(out);
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
  if (PyObject_SetAttr(hosted.ptr(), names.needs_reset, ended ? Py_True : Py_False) < 0) throw py::error_already_set();
  out.result = std::move(r);
  out.terminated = terminated != 0;
  out.truncated = truncated != 0;
  return out;
}

std::string Host::pack_step(const Stepped& s) {
  PyObject* r = s.result.ptr();
  return gymfarm::worker::pack_map({{"obs", PyTuple_GET_ITEM(r, 0)},
                                    {"reward", PyTuple_GET_ITEM(r, 1)},
                                    {"terminated", s.terminated ? Py_True : Py_False},
                                    {"truncated", s.truncated ? Py_True : Py_False},
                                    {"info", PyTuple_GET_ITEM(r, 4)}});
}

std::size_t Host::pack_step_raw(const Stepped& s, std::span<char> area) {
  PyObject* r = s.result.ptr();
  std::string tail;
  try {  // as pack_step packs them; one that cannot travel is pack_step's error
    tail = gymfarm::worker::pack(
        py::make_tuple(py::handle(PyTuple_GET_ITEM(r, 1)), py::handle(PyTuple_GET_ITEM(r, 4))));
  } catch (const std::runtime_error&) {
    return 0;
  }
  std::size_t len = 0;
  const auto place = [&](std::string_view desc, std::size_t n) -> char* {
    const std::size_t head = shm::kRawHeadBytes + desc.size() + tail.size();
    const std::size_t at = (head + shm::kRawAlign - 1) / shm::kRawAlign * shm::kRawAlign;
    if (at > area.size() || n > area.size() - at || n > UINT32_MAX) return nullptr;
    const uint32_t words[6] = {s.terminated ? 1U : 0U,
                               s.truncated ? 1U : 0U,
                               static_cast<uint32_t>(desc.size()),
                               static_cast<uint32_t>(tail.size()),
                               static_cast<uint32_t>(at),
                               static_cast<uint32_t>(n)};
    std::memcpy(area.data(), words, sizeof words);
    std::memcpy(area.data() + shm::kRawHeadBytes, desc.data(), desc.size());
    std::memcpy(area.data() + shm::kRawHeadBytes + desc.size(), tail.data(), tail.size());
    len = at + n;
    return area.data() + at;
  };
  return gymfarm::worker::write_raw(PyTuple_GET_ITEM(r, 0), place) ? len : 0;
}

py::object Host::step_vec(py::handle insts, py::handle actions, py::handle autoreset) {
  // host.py's step_vec, with each env's step through step_one: the same reply, and the per-env
  // Python only where host.py's step would run anyway. A request of another shape is host.py's.
  if (!PyList_CheckExact(insts.ptr()) || PySequence_Check(actions.ptr()) == 0 ||
      PyObject_Length(actions.ptr()) != PyList_GET_SIZE(insts.ptr())) {
    PyErr_Clear();
    return module_.attr("step_vec")(insts, actions, autoreset);
  }
  const auto n = PyList_GET_SIZE(insts.ptr());
  py::list obs(n), infos(n), rewards(n), terminated(n), truncated(n), finals, errs, marks, warned;
  py::dict no_info;
  for (Py_ssize_t i = 0; i < n; ++i) {
    obs[i] = py::none();
    infos[i] = no_info;
    rewards[i] = py::float_(0.0);
    terminated[i] = py::bool_(false);
    truncated[i] = py::bool_(false);
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    Stepped s;
    py::object reward;
    try {
      py::object action = py::reinterpret_steal<py::object>(PySequence_GetItem(actions.ptr(), i));
      if (!action) throw py::error_already_set();
      s = step_one(PyList_GET_ITEM(insts.ptr(), i), action, autoreset, py::none());
      py::handle rew = s.dict ? py::handle(s.dict["reward"]) : py::handle(PyTuple_GET_ITEM(s.result.ptr(), 1));
      reward = py::reinterpret_steal<py::object>(PyNumber_Float(rew.ptr()));
      if (!reward) throw py::error_already_set();
      try {  // host.py's _check_encodable: a value the wire cannot carry fails this env's row
        if (s.dict) {
          module_.attr("_check_encodable")(s.dict);
        } else {  // as _check_encodable packs it: [info, final_info, final_obs]
          (void)gymfarm::worker::pack(
              py::make_tuple(py::handle(PyTuple_GET_ITEM(s.result.ptr(), 4)), py::none(), py::none()));
        }
      } catch (py::error_already_set&) {
        throw;
      } catch (const std::runtime_error& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
        throw py::error_already_set();
      }
    } catch (py::error_already_set& e) {
      if (!e.matches(PyExc_Exception)) throw;
      errs.append(py::make_tuple(py::int_(i), error_map_of(e)));
      continue;
    }
    rewards[i] = reward;
    if (s.dict) {
      py::dict r = s.dict;
      obs[i] = r["obs"];
      terminated[i] = r["terminated"];
      truncated[i] = r["truncated"];
      infos[i] = r["info"];
      if (r.contains("final_obs")) finals.append(py::make_tuple(py::int_(i), r["final_obs"], r["final_info"]));
      if (r.contains("tuples")) marks.append(py::make_tuple(py::int_(i), r["tuples"]));
      if (r.contains("warnings")) warned.attr("extend")(r["warnings"]);
    } else {
      obs[i] = PyTuple_GET_ITEM(s.result.ptr(), 0);
      terminated[i] = py::bool_(s.terminated);
      truncated[i] = py::bool_(s.truncated);
      infos[i] = PyTuple_GET_ITEM(s.result.ptr(), 4);
    }
  }
  // The rows stacked, a failed row filled with zeros like the first good one; None when none is.
  py::object stacked = py::none();
  Py_ssize_t good = 0;
  while (good < n && obs[good].is_none()) ++good;
  if (good < n) stacked = gymfarm::worker::stack_rows(obs);  // from the rows' buffers, or null
  if (good < n && !stacked) {
    auto np = py::module_::import("numpy");
    py::object fill = np.attr("zeros_like")(np.attr("asarray")(obs[good]));
    py::list rows(n);
    for (Py_ssize_t j = 0; j < n; ++j) rows[j] = obs[j].is_none() ? fill : np.attr("asarray")(obs[j]);
    stacked = np.attr("stack")(rows);
  }
  py::dict out;
  out["obs"] = stacked;
  out["rewards"] = rewards;
  out["terminated"] = terminated;
  out["truncated"] = truncated;
  out["infos"] = infos;
  out["finals"] = finals;
  out["errors"] = errs;
  if (!marks.empty()) out["tuples"] = marks;
  if (PyList_GET_SIZE(warned_.ptr()) > 0) module_.attr("_add_warnings")(out);
  if (!warned.empty()) {
    py::list all = warned;
    if (out.contains("warnings")) all.attr("extend")(out["warnings"]);
    out["warnings"] = all;
  }
  return out;
}

Reply Host::dispatch(std::string_view v, std::string_view instance, std::string_view body, std::span<char> raw) {
  py::object req = gymfarm::worker::unpack(body);
  if (!py::isinstance<py::dict>(req))
    return {gymfarm::protocol::kStatusErr, error_body("bad_request", "the body must be a map")};
  py::dict d = req;
  const py::str inst(instance.data(), instance.size());
  auto get = [&](const char* key) -> py::object { return field(d, py::str(key).ptr()); };
  py::object result;
  if (v == verb::kStep) {
    const StepNames& names = step_names();
    Stepped s = step_one(inst, field(d, names.action), field(d, names.autoreset), field(d, names.processed));
    if (!s.dict) {
      if (!raw.empty())
        if (const std::size_t n = pack_step_raw(s, raw); n > 0) return {gymfarm::protocol::kStatusOk, {}, n};
      return encoded([&] { return pack_step(s); });
    }
    result = std::move(s.dict);
  } else if (v == verb::kStepVec) {
    result = step_vec(get("instances"), get("actions"), get("autoreset"));
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

py::object Host::error_map_of(py::error_already_set& e) {
  // An error raised in C (packing a reply, say) has no traceback: pass None, not a null handle
  // (which pybind11 refuses with a cast_error).
  py::object value = e.value() ? py::reinterpret_borrow<py::object>(e.value()) : py::none();
  py::object trace = e.trace() ? py::reinterpret_borrow<py::object>(e.trace()) : py::none();
  return module_.attr("error_map")(value, trace);
}

std::string Host::python_error(py::error_already_set& e) {
  try {
    return gymfarm::worker::pack(error_map_of(e));
  } catch (py::error_already_set& again) {
    return error_body("env_error", std::string("the error could not be described: ") + again.what());
  } catch (const std::exception& again) {
    return error_body("env_error", std::string("the error could not be described: ") + again.what());
  } catch (...) {
    return fallback_error_body();
  }
}

}  // namespace gymfarm::worker
