// The worker tests' own Catch2 main: it owns the one embedded interpreter, started before any test
// runs and finalized after the last (CPython cannot be started twice in one process). The tests
// find the venv's gymnasium through PYTHONHOME and PYTHONPATH (tests/CMakeLists.txt).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <exception>

#include <pybind11/embed.h>

int main(int argc, char* argv[]) {
  try {
    pybind11::scoped_interpreter python{};
    // Tests run with the GIL held, as the worker's serve loop does outside its waits.
    return Catch::Session().run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gymfarm_worker_tests: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "gymfarm_worker_tests: unexpected error\n");
  }
  return 1;
}
