#include "frontends/png.hpp"

#include <png.h>

#include <csetjmp>

namespace gymfarm::frontends {

namespace {
void append(png_structp p, png_bytep data, png_size_t n) {
  static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<const char*>(data), n);
}
}  // namespace

std::optional<std::string> encode_png(const protocol::Tensor& t) {
  if (t.dtype != protocol::DType::UInt8 || t.shape.size() != 3 || (t.shape[2] != 3 && t.shape[2] != 4) ||
      t.shape[0] == 0 || t.shape[1] == 0 || t.shape[0] > (1u << 16) || t.shape[1] > (1u << 16) ||
      t.data.size() != t.shape[0] * t.shape[1] * t.shape[2]) {
    return std::nullopt;
  }
  const auto h = static_cast<png_uint_32>(t.shape[0]), w = static_cast<png_uint_32>(t.shape[1]);
  const auto channels = static_cast<std::size_t>(t.shape[2]);
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  if (!png) return std::nullopt;
  png_infop info = png_create_info_struct(png);
  if (!info || setjmp(png_jmpbuf(png))) {  // NOLINT(cert-err52-cpp): libpng reports errors by longjmp
    png_destroy_write_struct(&png, &info);
    return std::nullopt;
  }
  png_set_write_fn(png, &out, append, nullptr);
  // Frames are written as the env steps: the fastest zlib level (measured on CartPole's 600x400
  // frames: several times faster than the default level, files under twice the size).
  png_set_compression_level(png, 1);
  png_set_IHDR(png, info, w, h, 8, channels == 4 ? PNG_COLOR_TYPE_RGBA : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (png_uint_32 y = 0; y < h; ++y) {
    png_write_row(png, reinterpret_cast<png_const_bytep>(t.data.data() + static_cast<std::size_t>(y) * w * channels));
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

}  // namespace gymfarm::frontends
