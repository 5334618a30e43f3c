#pragma once
// ZeroMQ multipart helpers shared by broker, worker and client. No exceptions escape them:
// a failed send returns false, so loops that serve untrusted peers keep going.
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

namespace gymfarm::transport {

using Frames = std::vector<zmq::message_t>;

inline std::string_view view(const zmq::message_t& m) { return {static_cast<const char*>(m.data()), m.size()}; }
inline std::string str(const zmq::message_t& m) { return std::string(view(m)); }
// A message holding a copy of `s` (bodies the broker writes itself; a worker's reply frame is moved
// to the client instead, never copied).
inline zmq::message_t payload(std::string_view s) { return zmq::message_t(s.data(), s.size()); }

// Sends all frames without blocking; false when the peer is unroutable or the queue is full.
bool send(zmq::socket_t& s, const std::vector<std::string_view>& frames, bool block = false);
// The same, moving the messages out of `frames` (no copy of their data).
bool send(zmq::socket_t& s, Frames& frames, bool block = false);
// Receives one whole multipart message; false when nothing is waiting (non-blocking).
bool recv(zmq::socket_t& s, Frames& out, bool block = false);

// Sensible socket defaults: no linger, bounded queues, bounded message size (0 = unlimited).
void configure(zmq::socket_t& s, long long max_message_bytes = 0, int hwm = 10000);

}  // namespace gymfarm::transport
