// libFuzzer target: clang++ -fsanitize=fuzzer,address (built by scripts/fuzz).
#include "fuzz/targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gymfarm::fuzz::stream(data, size);
  return 0;
}
