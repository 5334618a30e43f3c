#pragma once
// PNG encoding of an env's rgb_array frame (libpng).
#include <optional>
#include <string>

#include "protocol/tensor.hpp"

namespace gymfarm::frontends {

// The PNG of an HxWx3 (RGB) or HxWx4 (RGBA) uint8 frame; nullopt for any other tensor or when
// libpng fails.
std::optional<std::string> encode_png(const protocol::Tensor& frame);

}  // namespace gymfarm::frontends
