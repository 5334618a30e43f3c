#pragma once
// The zygote (`gymfarm-worker --zygote`): the pre-imported parent the broker asks for workers. It
// has loaded Python, numpy, gymnasium and the --import modules once and forks a worker per request.
#include <sys/types.h>

#include <string>

#include "worker/args.hpp"
#include "worker/host.hpp"

namespace gymfarm::worker {

// Reads "spawn IDENTITY" lines on stdin, answers "IDENTITY PID" (PID 0: the fork failed) on the
// reply pipe (its stdout when it starts). It has no threads and no ZeroMQ context, so forking is
// safe. Each worker is forked twice so that it is re-parented to the broker, which reaps it and
// sees its exit status as it does for fresh workers. Also answers "check ..." lines (check_answer).
[[noreturn]] void zygote(const Args& args, Host& host);

// In a grandchild of the zygote: becomes a worker like a freshly started one (limits, heartbeats,
// fresh random state, then serve).
[[noreturn]] void become_worker(Args args, Host& host, const std::string& identity, pid_t intermediate, int reply_fd);

// The zygote's answer to "check KEY HEX-ENV-ID ALIASES STRICT-KWARGS" (`args` is what follows
// "check "; the broker asks it for a make that found the pool at --max-workers): "check KEY ok\n",
// or "check KEY bad MESSAGE KIND ERROR\n" in hex.
std::string check_answer(Host& host, const std::string& args);

}  // namespace gymfarm::worker
