// gymfarm-worker: one process, one embedded CPython, its Gymnasium envs.
// Started by the broker; see docs/protocol.md "Broker ⇄ worker" and worker/README.md.
// With --zygote it is the pre-imported parent the broker asks for workers: it loads Python, numpy,
// gymnasium and the --import modules once, then forks a worker per request.
// The work is done by gymfarm_worker_lib (args, host, serve, zygote); this file only sequences it.
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <thread>

#include <pybind11/embed.h>
#include <zmq.hpp>

#include "worker/args.hpp"
#include "worker/host.hpp"
#include "worker/serve.hpp"
#include "worker/zygote.hpp"

namespace py = pybind11;
namespace worker = gymfarm::worker;

namespace {

int run(int argc, char** argv) {
  // First of all, before any thread, socket or Python: nothing but stdio survives from the parent.
  worker::close_inherited_fds();
  const worker::Args args = worker::parse(argc, argv);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (worker::parent_gone(args.parent)) return 0;

  if (args.zygote) {
    prctl(PR_SET_NAME, "gf-zygote");
    // Python, numpy, gymnasium and the operator's modules, loaded once; no threads before fork.
    // NOLINTNEXTLINE(concurrency-mt-unsafe): before any thread; no BLAS pool to lose across fork
    setenv("OPENBLAS_NUM_THREADS", "1", 0);
    try {
      worker::init_python(args);
      auto host = std::make_unique<worker::Host>(args);
      worker::zygote(args, *host);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "[gymfarm-worker] the zygote cannot start: %s\n", e.what());
      std::fflush(nullptr);
      _exit(4);
    }
  }

  // Heartbeats begin before Python starts, so a worker stopped or stuck during start-up is noticed
  // after the heartbeat timeout rather than the (long) start-up timeout.
  zmq::context_t ctx(1);
  worker::HeartbeatControl hbc;
  std::thread hb(worker::heartbeat_loop, std::ref(ctx), std::cref(args), std::ref(hbc));
  try {
    worker::init_python(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[gymfarm-worker] cannot start Python: %s\n", e.what());
    std::fflush(nullptr);
    _exit(3);
  }
  std::unique_ptr<worker::Host> host;
  try {
    host = std::make_unique<worker::Host>(args);
  } catch (py::error_already_set& e) {
    std::fprintf(stderr, "[gymfarm-worker] start-up failed: %s\n", e.what());
    std::fflush(nullptr);
    _exit(4);
  }
  worker::serve(args, *host);
  worker::finish(hbc, hb, 0);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[gymfarm-worker] %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "[gymfarm-worker] unexpected error\n");
  }
  return 1;
}
