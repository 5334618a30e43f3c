#pragma once
// The worker's command line (started by the broker; see docs/protocol.md "Broker ⇄ worker") and
// the process hygiene that comes before anything else runs: the parent check, inherited descriptors.
#include <sys/types.h>

#include <string>
#include <vector>

namespace gymfarm::worker {

struct Args {
  std::string backend;  // ZeroMQ endpoint for heartbeats
  std::string link;     // unix socket path for requests and replies (transport/stream.hpp)
  std::string identity;
  std::string python;
  std::vector<std::string> imports;
  pid_t parent = 0;
  unsigned long long memory_limit = 0;  // bytes, for error messages (the OS enforces it)
  unsigned long long cpu_limit = 0;     // seconds; set by the zygote's children themselves
  long spin_us = 0;                     // busy-poll this long for the next request before sleeping
  bool zygote = false;
};

// Parses the command line; on a bad one prints the usage and exits with status 2.
Args parse(int argc, char** argv);

// Whether the broker that started us is gone (we were re-parented).
bool parent_gone(pid_t parent);

// Closes every file descriptor above stderr: whatever the process inherited (the broker's
// listening sockets, its other sockets and pipes) must not reach env code, which could answer on
// them or keep them bound after the farm is gone.
void close_inherited_fds();

}  // namespace gymfarm::worker
