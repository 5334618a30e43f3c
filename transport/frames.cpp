#include "transport/frames.hpp"

#include <iterator>

namespace gymfarm::transport {

bool send(zmq::socket_t& s, const std::vector<std::string_view>& frames, bool block) {
  try {
    for (std::size_t i = 0; i < frames.size(); ++i) {
      auto flags = block ? zmq::send_flags::none : zmq::send_flags::dontwait;
      if (i + 1 < frames.size()) flags = flags | zmq::send_flags::sndmore;
      if (!s.send(zmq::buffer(frames[i].data(), frames[i].size()), flags)) return false;
    }
    return true;
  } catch (const zmq::error_t&) {
    return false;
  }
}

bool send(zmq::socket_t& s, Frames& frames, bool block) {
  try {
    for (std::size_t i = 0; i < frames.size(); ++i) {
      auto flags = block ? zmq::send_flags::none : zmq::send_flags::dontwait;
      if (i + 1 < frames.size()) flags = flags | zmq::send_flags::sndmore;
      if (!s.send(frames[i], flags)) return false;
    }
    return true;
  } catch (const zmq::error_t&) {
    return false;
  }
}

bool recv(zmq::socket_t& s, Frames& out, bool block) {
  out.clear();
  try {
    auto n = zmq::recv_multipart(s, std::back_inserter(out), block ? zmq::recv_flags::none : zmq::recv_flags::dontwait);
    return n.has_value();
  } catch (const zmq::error_t&) {
    return false;
  }
}

void configure(zmq::socket_t& s, long long max_message_bytes, int hwm) {
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::sndhwm, hwm);
  s.set(zmq::sockopt::rcvhwm, hwm);
  if (max_message_bytes > 0) s.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(max_message_bytes));
}

}  // namespace gymfarm::transport
