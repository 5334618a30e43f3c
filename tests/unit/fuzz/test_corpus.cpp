// Replays every kept fuzz input (fuzz/corpus/<target>/), so a crash found once stays fixed.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "fuzz/targets.hpp"

namespace fs = std::filesystem;

namespace {
std::size_t replay(const std::string& target, void (*fn)(const uint8_t*, std::size_t)) {
  std::size_t n = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(GYMFARM_FUZZ_CORPUS) / target)) {
    std::ifstream f(entry.path(), std::ios::binary);
    const std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    INFO(entry.path().string());
    fn(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    ++n;
  }
  return n;
}
}  // namespace

TEST_CASE("fuzz corpus: native codec") { CHECK(replay("codec", gymfarm::fuzz::codec) >= 3); }
TEST_CASE("fuzz corpus: Gymie JSON") { CHECK(replay("gymie_json", gymfarm::fuzz::gymie_json) >= 3); }
TEST_CASE("fuzz corpus: gateway access") { CHECK(replay("access", gymfarm::fuzz::access) >= 2); }
TEST_CASE("fuzz corpus: REST router and bodies") { CHECK(replay("rest", gymfarm::fuzz::rest) >= 5); }
TEST_CASE("fuzz corpus: stream framing") { CHECK(replay("stream", gymfarm::fuzz::stream) >= 6); }
