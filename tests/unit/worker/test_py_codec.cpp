// The worker's codec of Python values (worker/py_codec.cpp): a NumPy scalar packed and unpacked
// again is the same NumPy scalar, type and bits, whichever way it is rebuilt (from its value by its
// type, or through a 0-d array where a Python number would not carry it exactly).
#include <catch2/catch.hpp>

#include <string>

#include <pybind11/embed.h>

#include "worker/py_codec.hpp"

namespace py = pybind11;

TEST_CASE("py_codec: a NumPy scalar unpacks as the same scalar, type and bits") {
  py::exec(R"(
import numpy as np

def _nan(bits, dtype):
    return np.frombuffer(np.array([bits], dtype="<u" + dtype[-1]).tobytes(), dtype)[0]

_worker_test_scalars = [
    np.int8(-128), np.int16(-3), np.int32(2**31 - 1), np.int64(-2**63), np.uint8(255), np.uint16(65535),
    np.uint32(2**32 - 1), np.uint64(2**64 - 1), np.bool_(True), np.bool_(False), np.float64(-0.0),
    np.float64(0.1), _nan(0x7FF8000000000001, "<f8"), np.float32(0.1), np.float32(-np.inf),
    _nan(0x7FC00001, "<f4"), _nan(0x7F800001, "<f4"), np.float16(2.5), _nan(0x7E01, "<f2"),
]
)");
  const py::list scalars = py::globals()["_worker_test_scalars"];
  for (const py::handle s : scalars) {
    const std::string packed = gymfarm::worker::pack(py::dict(py::arg("action") = s));
    const py::object back = py::dict(gymfarm::worker::unpack(packed))["action"];
    INFO(py::repr(s).cast<std::string>() << " came back as " << py::repr(back).cast<std::string>());
    CHECK(back.get_type().is(s.get_type()));
    CHECK(back.attr("tobytes")().cast<std::string>() == s.attr("tobytes")().cast<std::string>());
  }
}
