#pragma once
// Python objects <-> MessagePack, numpy arrays straight from/to their buffers (docs/protocol.md).
// pybind11 appears only in worker/.
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include <pybind11/pybind11.h>

namespace gymfarm::worker {

namespace py = pybind11;

// Packs obj; objects of other types are sent as their repr() string. Throws py::error_already_set
// or std::runtime_error on failure (caught at the request boundary).
std::string pack(py::handle obj);

// Packs a map of these keys and values, in this order, as pack packs a dict of them.
std::string pack_map(std::initializer_list<std::pair<std::string_view, py::handle>> fields);

// Where write_raw gets to copy an array's bytes: given its [dtype, shape] descriptor (MessagePack)
// and its byte count, the destination, or nullptr when there is no room.
using RawPlace = std::function<char*(std::string_view desc, std::size_t nbytes)>;

// An ndarray (not 0-d, not a NumPy scalar) that pack sends from its buffer, copied raw to where
// `place` says, with the descriptor of the dtype and shape pack would write. False, with nothing
// copied, for anything else or when `place` has no room: then pack decides.
bool write_raw(py::handle obj, const RawPlace& place);

// The rows of a step_vec stacked as numpy.stack stacks them, a None row (an env that failed)
// filled with zeros: when every other row is an ndarray (not a subclass) of the same shape and of
// one little-endian dtype of numbers, copied from their buffers with one call into numpy; a null
// object otherwise (numpy.stack decides those).
py::object stack_rows(py::handle rows);

// Decodes a request body into Python objects; an empty body gives {}. Throws std::runtime_error
// with a message on malformed input.
py::object unpack(std::string_view body);

}  // namespace gymfarm::worker
