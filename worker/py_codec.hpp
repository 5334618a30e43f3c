#pragma once
// Python objects <-> MessagePack, numpy arrays straight from/to their buffers (docs/protocol.md).
// pybind11 appears only in worker/.
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

// Decodes a request body into Python objects; an empty body gives {}. Throws std::runtime_error
// with a message on malformed input.
py::object unpack(std::string_view body);

}  // namespace gymfarm::worker
