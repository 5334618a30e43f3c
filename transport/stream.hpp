#pragma once
// The broker ⇄ worker link: whole multipart messages over a unix stream socket, with a short
// busy-poll before blocking.
//
// Why not ZeroMQ here: a ZeroMQ hop wakes an I/O thread on each side, and on virtual machines
// a sleeping thread's wake-up costs tens of microseconds, several times the cost of the env step.
// A plain socket read by the thread that handles the message, polled for a few microseconds
// before it sleeps, skips all of those wake-ups while requests keep coming. The clients' side
// stays ZeroMQ (docs/protocol.md).
//
// Wire format (both ends on one host, so host byte order): u32 frame count, then per frame a u32
// length and the bytes.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "transport/frames.hpp"

namespace gymfarm::transport {

// Spinning pays only when messages follow within the spin. After kMisses spins in a row that
// ended without a message, waits sleep at once, except a probe every 16th wait that spins to see
// whether messages come quickly again; each probe that misses doubles the interval (up to 1024).
// So a worker among many that are stepped in turn, or one whose client thinks between steps,
// does not burn the cores the others need, and one that is stepped back to back spins again.
class SpinPolicy {
 public:
  bool should_spin();
  void spun(bool hit);  // whether the spin ended with a message

 private:
  static constexpr int kMisses = 4;
  static constexpr unsigned kFirstProbe = 16, kLastProbe = 1024;
  int misses_ = 0;
  unsigned skipped_ = 0;
  unsigned probe_every_ = kFirstProbe;
};

// One connection, non-blocking. Reads assemble messages into Frames (large frames are read
// straight into their message, no staging copy); writes that do not fit go to an out buffer that
// flush() drains when the socket is writable.
class StreamConn {
 public:
  StreamConn(int fd, long long max_message_bytes);
  ~StreamConn();
  StreamConn(const StreamConn&) = delete;
  StreamConn& operator=(const StreamConn&) = delete;

  int fd() const { return fd_; }
  // Queues one message and writes what the socket takes now. False when the link is broken.
  bool send(const std::vector<std::string_view>& frames);
  bool send(Frames& frames);
  // As send(), with file descriptors passed along (SCM_RIGHTS) with the message's first bytes.
  // The fds stay the caller's: they are duplicated while they wait in the out buffer.
  bool send(const std::vector<std::string_view>& frames, const std::vector<int>& fds);
  // Receive descriptors that come with messages (off by default: a plain read makes the kernel
  // close them, so a peer cannot fill this process's descriptor table). A message that carries
  // fds is followed by them in take_fd() order, first in first out.
  void accept_fds(bool on) { accept_fds_ = on; }
  int take_fd();  // -1 when none came
  // Writes queued bytes; false when the link is broken.
  bool flush();
  bool wants_write() const { return out_off_ < out_.size(); }
  // Bytes read from the socket but not parsed yet: messages may be waiting although poll shows nothing.
  bool buffered() const { return in_off_ < in_len_; }

  enum class Read { Message, Nothing, Closed, TooLarge };
  // One whole message into `out` if one is complete after reading what is available.
  Read next(Frames& out);
  // As next(), but waits up to `wait`, busy-polling for the first `spin` of it while recent
  // messages came within `spin` (adaptive: see stream.cpp).
  Read wait(Frames& out, std::chrono::microseconds spin, std::chrono::milliseconds wait);

 private:
  Read parse(Frames& out);
  void append(std::string_view bytes);

  int fd_;
  long long max_;
  std::unique_ptr<char[]> in_;  // bytes read but not yet parsed (headers, small frames)
  std::size_t in_off_ = 0, in_len_ = 0;
  uint64_t message_bytes_ = 0;
  Frames partial_;  // frames of the message being read
  uint32_t frames_left_ = 0;
  bool have_count_ = false;
  zmq::message_t big_;  // a large frame read in place
  std::size_t big_filled_ = 0;
  bool reading_big_ = false;
  ssize_t receive(char* into, std::size_t n);

  std::string out_;
  std::size_t out_off_ = 0;
  struct QueuedFds {
    std::size_t at;  // offset in out_ of the message they go with
    std::vector<int> fds;
  };
  std::vector<QueuedFds> out_fds_;
  bool accept_fds_ = false;
  std::vector<int> in_fds_;
  bool broken_ = false;
  SpinPolicy spin_policy_;
};

// Busy-polls `fd` for readability for up to `spin`, then blocks in poll(2) for up to `wait`.
// True when it is readable.
bool spin_then_poll(int fd, std::chrono::microseconds spin, std::chrono::milliseconds wait);
// Before a blocking read: busy-polls `fd` for up to `spin` while `policy` says spinning pays, and
// tells the policy whether input came in time.
void spin_for_input(int fd, std::chrono::microseconds spin, SpinPolicy& policy);

// A listening unix socket at `path` (removed first if it exists); -1 with err set on failure.
int listen_unix(const std::string& path, std::string& err);
// A connected unix socket, or -1.
int connect_unix(const std::string& path);

}  // namespace gymfarm::transport

namespace gymfarm::transport {

// A listening unix socket and its connections, each known by a name, for a poll loop: fill()
// adds poll items, process() reads what they say after the poll, send() writes to one by name.
// A connection is named when accepted (no `name_of`: clients get kAcceptedPrefix and a number) or
// by its first message (`name_of`: workers say who they are); an empty name closes it.
class StreamServer {
 public:
  // Starts a name given at accept. It cannot be a ZeroMQ routing id (ZeroMQ keeps ids that start
  // with a zero byte to its own 5-byte ones), so one map of clients can hold both kinds.
  static constexpr std::string_view kAcceptedPrefix{"\0local", 6};
  static bool accepted_name(std::string_view name) {
    return name.size() > kAcceptedPrefix.size() && name.substr(0, kAcceptedPrefix.size()) == kAcceptedPrefix;
  }

  using OnMessage = std::function<void(const std::string& name, Frames& message)>;
  using OnClose = std::function<void(const std::string& name, bool too_large)>;
  using NameOf = std::function<std::string(Frames& first)>;

  StreamServer(long long max_message_bytes, NameOf name_of) : max_(max_message_bytes), name_of_(std::move(name_of)) {}
  ~StreamServer();
  StreamServer(const StreamServer&) = delete;
  StreamServer& operator=(const StreamServer&) = delete;

  // Listens at `path`, readable and writable by this user only. False with err set on failure.
  bool listen(const std::string& path, std::string& err);
  const std::string& path() const { return path_; }

  void fill(std::vector<zmq::pollitem_t>& items) const;
  // Reads the events of the items fill() added from `first` on, calling the handlers.
  void process(const std::vector<zmq::pollitem_t>& items, std::size_t first, const OnMessage& on_message,
               const OnClose& on_close);
  bool send(const std::string& name, const std::vector<std::string_view>& frames);
  bool send(const std::string& name, Frames& frames);
  bool send(const std::string& name, const std::vector<std::string_view>& frames, const std::vector<int>& fds);
  bool has(const std::string& name) const { return named_.count(name) != 0; }
  // A connection stopped at its share of the turn with messages already read from the socket: the
  // next turn must not wait for poll (which sees an empty socket) to read them.
  bool backlog() const { return backlog_; }
  std::size_t size() const { return named_.size(); }

 private:
  // Reads one connection's messages; false when it is to be closed.
  bool read(std::unique_ptr<StreamConn>& conn, std::string name, const OnMessage& on_message, const OnClose& on_close);

  long long max_;
  NameOf name_of_;
  int listener_ = -1;
  std::string path_;
  uint64_t accepted_ = 0;
  bool backlog_ = false;
  std::vector<std::unique_ptr<StreamConn>> unnamed_;
  std::unordered_map<std::string, std::unique_ptr<StreamConn>> named_;
};

}  // namespace gymfarm::transport
