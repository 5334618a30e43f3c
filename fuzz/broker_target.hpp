#pragma once
// The live-broker fuzz target: arbitrary native messages into a real broker (its loop on a thread
// of this process, real gymfarm-worker processes, real sockets), over both client paths. Every 16
// inputs (every input with GYMFARM_FUZZ_REPLAY set) the broker must answer a ping on each path
// within 20 s; a broker that throws or crashes takes this process with it at once; the first call starts the
// farm (GYMFARM_WORKER: the worker binary; GYMFARM_PYTHON: the interpreter whose packages the
// workers use). Input: [path byte (even: ZeroMQ, odd: local socket), frame count byte % 9,
// (length byte, bytes)*]*, a length of 255 followed by two more length bytes; a frame "@I" stands
// for a live CartPole instance, "@T" for the farm's token, "@R" for a fresh request id.
#include <cstddef>
#include <cstdint>

namespace gymfarm::fuzz {

void broker(const uint8_t* data, std::size_t size);

}  // namespace gymfarm::fuzz
