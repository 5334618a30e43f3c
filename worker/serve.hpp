#pragma once
// The worker's service: the heartbeat thread (liveness, on its own ZeroMQ socket) and the request
// loop on the worker's link to the broker and its instances' slabs.
#include <sys/eventfd.h>

#include <atomic>
#include <thread>

#include <zmq.hpp>

#include "worker/args.hpp"
#include "worker/host.hpp"

namespace gymfarm::worker {

// The heartbeat thread's controls: stop, and an eventfd that wakes it so that stopping does not
// wait out a period.
struct HeartbeatControl {
  std::atomic<bool> stop{false};
  int wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
};

// Liveness: a C++ thread with its own socket; it never takes the GIL, so a busy env does not
// silence it. Progress is the broker's business (deadlines). It beats every 100 ms until the
// broker, answering a heartbeat, names another period (["hb", milliseconds]): the period grows
// with the pool's size, so the pool's heartbeats into the broker stay bounded. A reply sent on the
// link counts as a heartbeat. Ends the process (_exit(0)) when the parent is gone.
void heartbeat_loop(zmq::context_t& ctx, const Args& args, HeartbeatControl& ctl);

// Serves requests until the broker says bye or goes away, then closes the envs. The heartbeat
// thread is already running. Called with the GIL held.
void serve(const Args& args, Host& host);

// Ends the process without finalizing the interpreter: env libraries may hang in atexit handlers;
// the OS frees the rest. Stops and joins the heartbeat thread first.
[[noreturn]] void finish(HeartbeatControl& hbc, std::thread& hb, int rc);

}  // namespace gymfarm::worker
