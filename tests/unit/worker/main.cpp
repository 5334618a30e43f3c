// The worker tests' own Catch2 main: it owns the one embedded interpreter, started before any test
// runs and finalized after the last (CPython cannot be started twice in one process). The tests
// find the venv's gymnasium through PYTHONHOME and PYTHONPATH (tests/CMakeLists.txt).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <pybind11/embed.h>

int main(int argc, char* argv[]) {
  pybind11::scoped_interpreter python{};
  // Tests run with the GIL held, as the worker's serve loop does outside its waits.
  return Catch::Session().run(argc, argv);
}
