// gymfarm._slab_port: the local Python client's side of a slab, compiled (python/gymfarm/slab.py
// uses it when it is built, and its own Python otherwise). One step is one call: the request
// written and the worker rung, the reply awaited spinning (dozing first through a long step), and
// a raw step reply's observation copied from the slab into a new ndarray. What is not that
// quick case (a reply not laid out raw, one that has not come within the spin, an instance whose
// slab is gone) is left to slab.py, which sleeps, reads MessagePack replies and raises errors.
//
// The port maps the slab itself (shm::Slab: the header checked, the areas' offsets read once)
// and keeps its own copy of the doorbell, so it never touches memory or a descriptor that the
// Python side has let go of. Nothing in the slab is trusted: lengths are checked before use.
#include <fcntl.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "shm/slab.hpp"

namespace py = pybind11;

namespace {

namespace off = gymfarm::shm::off;
using gymfarm::shm::Slab;
using gymfarm::shm::State;
using gymfarm::shm::Status;
using gymfarm::shm::Verb;
constexpr auto kRelaxed = std::memory_order_relaxed;

// A client that spins for a step longer than this first dozes until this long before its expected
// end (slab.py's _NAP_MARGIN): the timer's slack and a wake-up fit in it.
constexpr uint64_t kNapMarginNs = 150'000;
// Descriptors remembered per slab (an env's observations have one).
constexpr std::size_t kMaxDescs = 64;

// A raw reply's observation descriptor, checked by codec.raw_desc. The strides are C-ordered,
// from the item size Python reports: pybind11 before 2.12 reads a dtype's item size from NumPy
// 1.x's struct layout, which NumPy 2 changed.
struct Desc {
  py::dtype dtype;
  std::vector<py::ssize_t> shape, strides;
  std::size_t bytes = 0;
};

// A raw reply's tail [reward, info] of one length read by offsets, as tails.py's learned layout
// reads it (its spec): the bytes that must stay the same, then each value, a NumPy scalar made by
// its type from the value read at its offset (exactly what tails.py's struct call and type give),
// or a plain value shared between replies.
class TailLayout {
 public:
  TailLayout(std::size_t length, const py::list& runs, const py::list& values, const py::tuple& keys)
      : length_(length) {
    for (auto run : runs) {
      auto r = run.cast<py::tuple>();
      auto at = r[0].cast<std::size_t>();
      auto bytes = r[1].cast<std::string>();
      if (at > length || bytes.size() > length - at)
        throw py::value_error("a tail layout's fixed bytes lie outside it");
      fixed_.emplace_back(at, std::move(bytes));
    }
    for (auto value : values) {
      auto v = value.cast<py::tuple>();
      auto at = v[0].cast<long long>();
      auto code = v[1].cast<std::string>();
      if (at < 0) {
        values_.push_back({0, 0, v[2]});
        continue;
      }
      if (code.size() != 1 || width(code[0]) == 0 || static_cast<std::size_t>(at) > length ||
          width(code[0]) > length - static_cast<std::size_t>(at)) {
        throw py::value_error("a tail layout's value cannot be read");
      }
      values_.push_back({static_cast<std::size_t>(at), code[0], v[2]});
    }
    for (auto k : keys) keys_.push_back(py::reinterpret_borrow<py::object>(k));
    if (values_.size() != keys_.size() + 1) throw py::value_error("a tail layout's keys and values do not match");
  }

  // The reward and info read from `p` (`length` bytes), or false when a fixed byte differs or a
  // float32 is a NaN (tails.py then reads it, keeping the NaN's payload).
  bool decode(const char* p, py::object& reward, py::object& info_out) const {
    for (const auto& [at, bytes] : fixed_) {
      if (std::memcmp(p + at, bytes.data(), bytes.size()) != 0) return false;
    }
    std::vector<py::object> out;
    out.reserve(values_.size());
    for (const auto& v : values_) {
      if (v.code == 0) {
        out.push_back(v.type);
        continue;
      }
      py::object base = read(p + v.at, v.code);
      if (!base) return false;
      PyObject* made = PyObject_CallOneArg(v.type.ptr(), base.ptr());
      if (made == nullptr) throw py::error_already_set();
      out.push_back(py::reinterpret_steal<py::object>(made));
    }
    py::dict info;
    for (std::size_t i = 0; i < keys_.size(); ++i) {
      if (PyDict_SetItem(info.ptr(), keys_[i].ptr(), out[i + 1].ptr()) != 0) throw py::error_already_set();
    }
    reward = std::move(out[0]);
    info_out = std::move(info);
    return true;
  }

  std::size_t length() const { return length_; }

 private:
  struct Value {
    std::size_t at;
    char code;        // a struct code (tails.py's), or 0 for a plain value
    py::object type;  // the NumPy scalar type, or the plain value itself
  };

  static std::size_t width(char code) {
    switch (code) {
      case '?':
      case 'b':
      case 'B': return 1;
      case 'h':
      case 'H': return 2;
      case 'i':
      case 'I':
      case 'f': return 4;
      case 'q':
      case 'Q':
      case 'd': return 8;
      default: return 0;
    }
  }

  template <class T>
  static T load(const char* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }

  // The value as struct's little-endian code gives it (this host is little-endian: slab.hpp's
  // layout is in host order); null for a float32 NaN.
  static py::object read(const char* p, char code) {
    PyObject* o = nullptr;
    switch (code) {
      case '?': o = PyBool_FromLong(load<uint8_t>(p) != 0); break;
      case 'b': o = PyLong_FromLong(load<int8_t>(p)); break;
      case 'B': o = PyLong_FromLong(load<uint8_t>(p)); break;
      case 'h': o = PyLong_FromLong(load<int16_t>(p)); break;
      case 'H': o = PyLong_FromLong(load<uint16_t>(p)); break;
      case 'i': o = PyLong_FromLong(load<int32_t>(p)); break;
      case 'I': o = PyLong_FromUnsignedLong(load<uint32_t>(p)); break;
      case 'q': o = PyLong_FromLongLong(load<int64_t>(p)); break;
      case 'Q': o = PyLong_FromUnsignedLongLong(load<uint64_t>(p)); break;
      case 'd': o = PyFloat_FromDouble(load<double>(p)); break;
      case 'f': {
        const auto f = load<float>(p);
        if (f != f) return {};
        o = PyFloat_FromDouble(f);
        break;
      }
      default: return {};
    }
    if (o == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(o);
  }

  std::size_t length_;
  std::vector<std::pair<std::size_t, std::string>> fixed_;
  std::vector<Value> values_;
  std::vector<py::object> keys_;
};

class Port {
 public:
  // `describe(desc_bytes)` gives (dtype, shape, count, bytes) for a descriptor or raises
  // ValueError (codec.raw_desc): the one place a descriptor is judged.
  Port(int memfd, int doorbell, py::object describe) : describe_(std::move(describe)) {
    std::string err;
    if (!slab_.map(memfd, err)) throw py::value_error(err);
    doorbell_ = ::fcntl(doorbell, F_DUPFD_CLOEXEC, 0);
    if (doorbell_ < 0) throw std::system_error(errno, std::generic_category(), "dup of the doorbell");
    seq_ = slab_.u32(off::kReqSeq).load(kRelaxed);
  }
  ~Port() {
    if (doorbell_ >= 0) ::close(doorbell_);
  }
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  uint32_t seq() const { return seq_; }

  // The areas as this mapping read them once: (request offset, capacity, reply offset, capacity).
  py::tuple areas() const {
    const char* base = reinterpret_cast<const char*>(slab_.word(0));
    return py::make_tuple(slab_.request_area() - base, slab_.request_capacity(), slab_.reply_area() - base,
                          slab_.reply_capacity());
  }

  bool attached() const {
    return slab_.u32(off::kState).load(std::memory_order_acquire) == static_cast<uint32_t>(State::Attached);
  }

  // Writes a request and rings the worker if it sleeps; false when it does not fit.
  bool post(uint32_t verb, const py::bytes& body, bool worker_spin) {
    char* data = nullptr;
    Py_ssize_t n = 0;
    if (PyBytes_AsStringAndSize(body.ptr(), &data, &n) != 0) throw py::error_already_set();
    if (static_cast<std::size_t>(n) > slab_.request_capacity()) return false;
    std::memcpy(slab_.request_area(), data, static_cast<std::size_t>(n));
    publish(verb, static_cast<std::size_t>(n), worker_spin);
    return true;
  }

  // Posts the request of `n` bytes written in the request area.
  void publish(uint32_t verb, std::size_t n, bool worker_spin) {
    slab_.u32(off::kReqVerb).store(verb, kRelaxed);
    slab_.u32(off::kReqLen).store(static_cast<uint32_t>(n), kRelaxed);
    slab_.u32(off::kWorkerSpin).store(worker_spin ? 1 : 0, kRelaxed);
    ++seq_;
    // seq_cst store, then seq_cst load: a worker that went to sleep after its last look at req_seq
    // is rung (shm/slab.hpp)
    slab_.u32(off::kReqSeq).store(seq_, std::memory_order_seq_cst);
    if (slab_.u32(off::kWorkerSleeping).load(std::memory_order_seq_cst) != 0) {
      const uint64_t one = 1;
      if (::write(doorbell_, &one, sizeof one) < 0) {
        // the worker still looks at its slabs every 500 ms
      }
    }
  }

  // Waits for the reply to the request posted last as slab.py's wait does before it sleeps:
  // busy-polls for up to `spin_s` while the worker's recent requests took less (dozing first
  // through all but the last 150 us of a longer one). 2: the reply was there already, 1: it came,
  // 0: not yet (the caller sleeps).
  int spin(double spin_s) {
    if (done()) {
      ++ready_;
      return 2;
    }
    const uint64_t recent = slab_.u64(off::kStepNs).load(kRelaxed);
    // (a NaN or negative spin is none; at most 10 s, the longest a spin_us says)
    const auto budget = std::chrono::nanoseconds(spin_s > 0 ? static_cast<int64_t>(std::min(spin_s, 10.0) * 1e9) : 0);
    if (recent < static_cast<uint64_t>(budget.count())) {
      if (recent > kNapMarginNs) doze(std::chrono::nanoseconds(recent - kNapMarginNs));
      gymfarm::shm::spin_until([this] { return done(); }, budget);
    }
    return done() ? 1 : 0;
  }

  // Once the reply is there: a raw step reply read as (obs, reward, terminated, truncated, info)
  // when its tail has a layout taught here that holds, else as [obs, terminated, truncated, tail
  // offset in the reply area, tail length] for tails.py to read; None when the reply is not laid
  // out raw. ValueError when its layout does not hold together.
  py::object read_raw() {
    const uint32_t status = slab_.u32(off::kRepStatus).load(kRelaxed);
    const std::size_t n = slab_.u32(off::kRepLen).load(kRelaxed);
    if (status != static_cast<uint32_t>(Status::OkRaw) || n > slab_.reply_capacity()) return py::none();
    constexpr std::size_t head = gymfarm::shm::kRawHeadBytes;
    if (n < head) throw py::value_error("a raw step reply of " + std::to_string(n) + " bytes");
    const char* r = slab_.reply_area();
    std::array<uint32_t, 6> h{};  // terminated, truncated, desc_len, tail_len, obs_off, obs_len
    std::memcpy(h.data(), r, sizeof h);
    const uint64_t desc_len = h[2], tail_len = h[3], obs_off = h[4], obs_len = h[5];
    if (head + desc_len + tail_len > obs_off || obs_off + obs_len != n) {
      throw py::value_error("a raw step reply's lengths do not add up");
    }
    const Desc& d = describe(std::string_view(r + head, desc_len));
    if (d.bytes != obs_len) {
      throw py::value_error("a raw observation of " + std::to_string(obs_len) + " bytes for " +
                            std::to_string(d.bytes));
    }
    py::array obs(d.dtype, d.shape, d.strides, r + obs_off);  // a copy: the client's own array
    const bool term = h[0] != 0, trunc = h[1] != 0;
    if (auto it = tails_.find(tail_len); it != tails_.end()) {
      const std::shared_ptr<const TailLayout> layout = it->second;  // held: decoding calls into Python
      py::object reward, info;
      if (layout->decode(r + head + desc_len, reward, info)) {
        return py::make_tuple(std::move(obs), std::move(reward), term, trunc, std::move(info));
      }
    }
    py::list rest(5);
    rest[0] = std::move(obs);
    rest[1] = py::bool_(term);
    rest[2] = py::bool_(trunc);
    rest[3] = py::int_(head + desc_len);
    rest[4] = py::int_(tail_len);
    return rest;
  }

  // Teaches the port tails.py's layout (its spec: runs, values, keys) for tails of `length`
  // bytes, or forgets the one it had (None).
  void learn_tail(std::size_t length, const py::object& spec) {
    tails_.erase(length);
    if (spec.is_none()) return;
    auto t = spec.cast<py::tuple>();
    if (tails_.size() >= kMaxDescs) tails_.clear();
    tails_.emplace(length, std::make_shared<const TailLayout>(length, t[0].cast<py::list>(), t[1].cast<py::list>(),
                                                              t[2].cast<py::tuple>()));
  }

  // A step posted as StepRaw and awaited spinning: read_raw's tuple or list when its raw reply
  // came within the spin. Else slab.py's wait finishes it: 1 when no reply came within the spin
  // (it sleeps at once), 2 when the reply is not laid out raw; 0 when nothing was posted (the
  // slab is not served, or the body does not fit).
  py::object step(const py::bytes& body, double spin_s, bool worker_spin) {
    if (!attached() || !post(static_cast<uint32_t>(Verb::StepRaw), body, worker_spin)) return py::int_(0);
    return await_step(spin_s);
  }

  // step for the body {"action": action}, an ndarray or NumPy scalar, written here from the head
  // codec.action_head gave for its type, format and shape and the action's own bytes; as step
  // answers, or 3 when no head was taught for it (slab.py packs it, and teaches one) or 4 when
  // there is none (slab.py packs it).
  py::object step_action(py::handle action, double spin_s, bool worker_spin) {
    if (!attached()) return py::int_(0);
    {
      Py_buffer view{};
      if (PyObject_GetBuffer(action.ptr(), &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
        PyErr_Clear();
        return py::int_(4);
      }
      struct Release {  // before the wait: nothing holds the action's buffer while the GIL is let go
        Py_buffer* v;
        ~Release() { PyBuffer_Release(v); }
      } release{&view};
      auto it = heads_.find(head_key(action, view));
      if (it == heads_.end()) return py::int_(3);
      if (!it->second) return py::int_(4);
      const std::string& head = *it->second;
      const auto n = head.size() + static_cast<std::size_t>(view.len);
      if (n > slab_.request_capacity()) return py::int_(0);
      std::memcpy(slab_.request_area(), head.data(), head.size());
      std::memcpy(slab_.request_area() + head.size(), view.buf, static_cast<std::size_t>(view.len));
      publish(static_cast<uint32_t>(Verb::StepRaw), n, worker_spin);
    }
    return await_step(spin_s);
  }

  // Teaches the head of {"action": <such an action>} (codec.action_head's bytes, or None: packed
  // the long way) for actions of `action`'s type, format and shape.
  void learn_head(py::handle action, const py::object& head) {
    Py_buffer view{};
    if (PyObject_GetBuffer(action.ptr(), &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
      PyErr_Clear();
      return;
    }
    std::string key = head_key(action, view);
    PyBuffer_Release(&view);
    if (heads_.size() >= kMaxDescs) heads_.clear();
    heads_[std::move(key)] = head.is_none() ? std::nullopt : std::optional<std::string>(head.cast<std::string>());
  }

  // Waits that found the reply there already (spin's 2).
  uint64_t ready() const { return ready_; }

  // Whether the reply to the request posted last is there.
  bool done() const { return slab_.u32(off::kDoneSeq).load(std::memory_order_acquire) == seq_; }

 private:
  // A posted step awaited spinning: read_raw's answer, 1 (no reply within the spin) or 2 (a reply
  // not laid out raw).
  py::object await_step(double spin_s) {
    if (spin(spin_s) == 0) return py::int_(1);
    py::object raw = read_raw();
    return raw.is_none() ? py::int_(2) : raw;
  }

  // What tells one kind of action from another: its type, buffer format and shape.
  static std::string head_key(py::handle action, const Py_buffer& view) {
    const auto type = reinterpret_cast<std::uintptr_t>(Py_TYPE(action.ptr()));
    std::string key(reinterpret_cast<const char*>(&type), sizeof type);
    key += view.format != nullptr ? view.format : "B";
    key += '|';
    for (int i = 0; i < view.ndim; ++i) key.append(reinterpret_cast<const char*>(&view.shape[i]), sizeof(Py_ssize_t));
    return key;
  }

  // Sleeps on done_seq for at most `t`, woken at once by the reply (the GIL let go meanwhile).
  void doze(std::chrono::nanoseconds t) {
    py::gil_scoped_release nogil;
    slab_.u32(off::kClientWaiting).store(1, std::memory_order_seq_cst);
    const uint32_t seen = slab_.u32(off::kDoneSeq).load(std::memory_order_seq_cst);
    if (seen != seq_) {
      gymfarm::shm::futex_wait(slab_.word(off::kDoneSeq), seen,
                               std::chrono::duration_cast<std::chrono::microseconds>(t));
    }
    slab_.u32(off::kClientWaiting).store(0, kRelaxed);
  }

  const Desc& describe(std::string_view raw) {
    std::string key(raw);
    auto it = descs_.find(key);
    if (it != descs_.end()) return it->second;
    py::tuple got = describe_(py::bytes(key.data(), key.size()));  // raises ValueError for a bad one
    try {
      return remember(std::move(key), got);
    } catch (const py::cast_error&) {  // codec.raw_desc keeps them small; never trust that here
      throw py::value_error("a raw step reply's descriptor does not fit");
    }
  }

  const Desc& remember(std::string key, const py::tuple& got) {
    Desc d{py::reinterpret_borrow<py::dtype>(got[0]), {}, {}, got[3].cast<std::size_t>()};
    for (auto dim : got[1].cast<py::tuple>()) d.shape.push_back(dim.cast<py::ssize_t>());
    d.strides.assign(d.shape.size(), 0);
    auto stride = got[0].attr("itemsize").cast<py::ssize_t>();
    for (std::size_t i = d.shape.size(); i-- > 0;) {
      d.strides[i] = stride;
      if (__builtin_mul_overflow(stride, std::max<py::ssize_t>(d.shape[i], 1), &stride)) {
        throw py::value_error("a raw step reply's descriptor does not fit");
      }
    }
    if (descs_.size() >= kMaxDescs) descs_.clear();
    return descs_.emplace(std::move(key), std::move(d)).first->second;
  }

  Slab slab_;
  int doorbell_ = -1;
  uint32_t seq_ = 0;
  uint64_t ready_ = 0;
  py::object describe_;
  std::unordered_map<std::string, Desc> descs_;
  std::unordered_map<std::size_t, std::shared_ptr<const TailLayout>> tails_;  // by tail length
  std::unordered_map<std::string, std::optional<std::string>> heads_;         // by head_key
};

}  // namespace

PYBIND11_MODULE(_slab_port, m) {
  m.doc() = "The local Python client's side of a slab, compiled (python/gymfarm/slab.py)";
  py::class_<Port>(m, "Port")
      .def(py::init<int, int, py::object>(), py::arg("memfd"), py::arg("doorbell"), py::arg("describe"))
      .def_property_readonly("seq", &Port::seq)
      .def_property_readonly("ready", &Port::ready)
      .def_property_readonly("done", &Port::done)
      .def_property_readonly("areas", &Port::areas)
      .def("post", &Port::post)
      .def("spin", &Port::spin)
      .def("read_raw", &Port::read_raw)
      .def("learn_tail", &Port::learn_tail)
      .def("step_action", &Port::step_action)
      .def("learn_head", &Port::learn_head)
      .def("step", &Port::step);
}
