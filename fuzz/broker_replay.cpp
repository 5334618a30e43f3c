// Replays the kept inputs of the live-broker target (fuzz/corpus/broker/) against a live broker,
// checking both paths after every input (GYMFARM_FUZZ_REPLAY, set by ctest):
// run by ctest, so a message that once stopped the farm stays harmless.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "fuzz/broker_target.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: gymfarm_fuzz_broker_replay CORPUS_DIR\n");
    return 2;
  }
  std::size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(argv[1])) {
    std::ifstream f(entry.path(), std::ios::binary);
    const std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::fprintf(stderr, "replaying %s\n", entry.path().filename().c_str());
    gymfarm::fuzz::broker(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    ++n;
  }
  std::printf("%zu inputs replayed against a live broker; it answered after each\n", n);
  std::fflush(stdout);
  std::_Exit(n > 0 ? 0 : 1);  // the farm's thread runs on; the process ends with it
}
