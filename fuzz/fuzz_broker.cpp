// libFuzzer target: clang++ -fsanitize=fuzzer,address (built by scripts/fuzz broker).
#include "fuzz/broker_target.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  gymfarm::fuzz::broker(data, size);
  return 0;
}
