#include "transport/stream.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <system_error>

namespace gymfarm::transport {

namespace {

constexpr std::size_t kChunk = std::size_t{64} * 1024;  // read size; frames at least this big are read in place
constexpr std::size_t kInCapacity = 3 * kChunk;
constexpr uint32_t kMaxFrames = 1u << 20;  // more frames than any message has: a corrupt stream

uint32_t load_u32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void put_u32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }

}  // namespace

StreamConn::StreamConn(int fd, long long max_message_bytes)
    : fd_(fd), max_(max_message_bytes), in_(new char[kInCapacity]) {
  ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
}

StreamConn::~StreamConn() {
  if (fd_ >= 0) ::close(fd_);
  for (int fd : in_fds_) ::close(fd);
  for (auto& q : out_fds_) {
    for (int fd : q.fds) ::close(fd);
  }
}

int StreamConn::take_fd() {
  if (in_fds_.empty()) return -1;
  const int fd = in_fds_.front();
  in_fds_.erase(in_fds_.begin());
  return fd;
}

namespace {

constexpr std::size_t kMaxFdsPerMessage = 4;
constexpr std::size_t kMaxHeldFds = 64;  // more than any conversation needs: a misbehaving peer

// sendmsg of `iov` with `fds` as SCM_RIGHTS (none: a plain sendmsg).
ssize_t send_with_fds(int sock, iovec* iov, std::size_t iovlen, const std::vector<int>& fds) {
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = iovlen;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)] = {};
  if (!fds.empty()) {
    const std::size_t n = std::min(fds.size(), kMaxFdsPerMessage);
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * n);
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * n);
  }
  return ::sendmsg(sock, &msg, MSG_NOSIGNAL);  // a closed peer is an error, not SIGPIPE
}

}  // namespace

// A read of the socket; with accept_fds_, descriptors that come with the bytes are kept.
ssize_t StreamConn::receive(char* into, std::size_t n) {
  if (!accept_fds_) return ::recv(fd_, into, n, 0);
  iovec iov{into, n};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage * 4)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  const ssize_t got = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
  if (got < 0) return got;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (in_fds_.size() < kMaxHeldFds) {
        in_fds_.push_back(fd);
      } else {
        ::close(fd);
      }
    }
  }
  return got;
}

void StreamConn::append(std::string_view bytes) {
  if (out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  }
  out_.append(bytes);
}

bool StreamConn::send(const std::vector<std::string_view>& frames) { return send(frames, {}); }

// With nothing queued, the message goes out in one sendmsg straight from the frames (with its fds,
// if any); only what the socket does not take is copied into the out buffer.
bool StreamConn::send(const std::vector<std::string_view>& frames, const std::vector<int>& fds) {
  if (broken_) return false;
  std::string heads;
  heads.reserve(4 + 4 * frames.size());
  put_u32(heads, static_cast<uint32_t>(frames.size()));
  for (auto f : frames) put_u32(heads, static_cast<uint32_t>(f.size()));
  std::vector<iovec> iov;
  iov.reserve(1 + 2 * frames.size());
  iov.push_back({heads.data(), 4});
  for (std::size_t i = 0; i < frames.size(); ++i) {
    iov.push_back({heads.data() + 4 + 4 * i, 4});
    if (!frames[i].empty()) iov.push_back({const_cast<char*>(frames[i].data()), frames[i].size()});
  }
  std::size_t skip = 0;         // bytes the socket took now
  bool fds_sent = fds.empty();  // the kernel attaches them to the bytes of the first write that takes any
  if (!wants_write()) {
    for (std::size_t at = 0; at < iov.size();) {
      const auto count = std::min<std::size_t>(iov.size() - at, IOV_MAX);
      const ssize_t n = send_with_fds(fd_, iov.data() + at, count, fds_sent ? std::vector<int>{} : fds);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n < 0) {
        broken_ = true;
        return false;
      }
      fds_sent = true;
      std::size_t left = static_cast<std::size_t>(n);
      skip += left;
      while (at < iov.size() && left >= iov[at].iov_len) left -= iov[at++].iov_len;
      if (left > 0) break;  // a partial write: the rest is queued below
    }
  }
  if (!fds_sent) {  // the whole message waits: its fds (duplicated) go with its first bytes in flush()
    QueuedFds q{out_off_ == out_.size() ? 0 : out_.size(), {}};  // append() restarts a drained buffer
    for (int fd : fds) {
      const int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
      if (dup >= 0) q.fds.push_back(dup);
    }
    out_fds_.push_back(std::move(q));
  }
  for (const auto& v : iov) {
    const std::size_t take = std::min(skip, v.iov_len);
    skip -= take;
    if (take < v.iov_len) append(std::string_view(static_cast<const char*>(v.iov_base) + take, v.iov_len - take));
  }
  return true;
}

bool StreamConn::send(Frames& frames) {
  std::vector<std::string_view> views;
  views.reserve(frames.size());
  for (const auto& m : frames) views.push_back(view(m));
  return send(views);
}

bool StreamConn::flush() {
  while (!broken_ && out_off_ < out_.size()) {
    // Bytes up to the next message that carries fds, or that message with its fds.
    std::size_t end = out_.size();
    const std::vector<int>* fds = nullptr;
    if (!out_fds_.empty()) {
      if (out_fds_.front().at > out_off_) {
        end = out_fds_.front().at;
      } else {
        fds = &out_fds_.front().fds;
      }
    }
    iovec iov{out_.data() + out_off_, end - out_off_};
    const ssize_t n = send_with_fds(fd_, &iov, 1, fds ? *fds : std::vector<int>{});
    if (n > 0 && fds) {
      for (int fd : *fds) ::close(fd);
      out_fds_.erase(out_fds_.begin());
    }
    if (n > 0) {
      out_off_ += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return true;
    } else {
      broken_ = true;
    }
  }
  if (out_off_ == out_.size() && out_.capacity() > 4 * kChunk) {
    std::string().swap(out_);  // do not keep a large observation's buffer around
    out_off_ = 0;
  }
  return !broken_;
}

StreamConn::Read StreamConn::parse(Frames& out) {
  while (!reading_big_) {
    const std::size_t avail = in_len_ - in_off_;
    const char* p = in_.get() + in_off_;
    if (!have_count_) {
      if (avail < 4) return Read::Nothing;
      frames_left_ = load_u32(p);
      if (frames_left_ == 0 || frames_left_ > kMaxFrames) return Read::TooLarge;
      in_off_ += 4;
      have_count_ = true;
      message_bytes_ = 0;
      continue;
    }
    if (frames_left_ == 0) {
      out = std::move(partial_);
      partial_ = Frames();
      have_count_ = false;
      return Read::Message;
    }
    if (avail < 4) return Read::Nothing;
    const uint32_t len = load_u32(p);
    message_bytes_ += len;
    if (max_ > 0 && static_cast<long long>(message_bytes_) > max_) return Read::TooLarge;
    if (avail >= 4 + static_cast<std::size_t>(len)) {
      partial_.emplace_back(p + 4, len);
      in_off_ += 4 + len;
      frames_left_--;
      continue;
    }
    if (len < kChunk) {
      message_bytes_ -= len;  // counted again when the rest has arrived
      return Read::Nothing;
    }
    big_ = zmq::message_t(len);  // read the rest of this frame straight into its message
    std::memcpy(big_.data(), p + 4, avail - 4);
    big_filled_ = avail - 4;
    in_off_ += avail;
    reading_big_ = true;
  }
  return Read::Nothing;
}

StreamConn::Read StreamConn::next(Frames& out) {
  while (true) {
    const Read r = parse(out);
    if (r != Read::Nothing) return r;
    ssize_t n;
    if (reading_big_) {
      n = receive(static_cast<char*>(big_.data()) + big_filled_, big_.size() - big_filled_);
      if (n > 0) {
        big_filled_ += static_cast<std::size_t>(n);
        if (big_filled_ == big_.size()) {
          partial_.push_back(std::move(big_));
          reading_big_ = false;
          frames_left_--;
        }
        continue;
      }
    } else {
      if (in_off_ > 0) {  // what is left is under one chunk: frames that big are read in place
        std::memmove(in_.get(), in_.get() + in_off_, in_len_ - in_off_);
        in_len_ -= in_off_;
        in_off_ = 0;
      }
      n = receive(in_.get() + in_len_, kInCapacity - in_len_);
      if (n > 0) {
        in_len_ += static_cast<std::size_t>(n);
        continue;
      }
    }
    if (n == 0) return Read::Closed;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Read::Nothing;
    return Read::Closed;
  }
}

StreamConn::Read StreamConn::wait(Frames& out, std::chrono::microseconds spin, std::chrono::milliseconds wait) {
  Read r = next(out);
  if (r != Read::Nothing) return r;
  const bool spinning = spin.count() > 0 && spin_policy_.should_spin();
  const auto start = std::chrono::steady_clock::now();
  const bool ready = spin_then_poll(fd_, spinning ? spin : std::chrono::microseconds(0), wait);
  if (spinning) spin_policy_.spun(ready && std::chrono::steady_clock::now() - start <= spin);
  return ready ? next(out) : Read::Nothing;
}

bool SpinPolicy::should_spin() {
  if (misses_ < kMisses) return true;
  if (++skipped_ < probe_every_) return false;
  skipped_ = 0;
  return true;
}

void SpinPolicy::spun(bool hit) {
  if (hit) {
    misses_ = 0;
    probe_every_ = kFirstProbe;
  } else if (misses_ < kMisses) {
    ++misses_;
  } else {
    probe_every_ = std::min(probe_every_ * 2, kLastProbe);  // a probe that missed: probe less often
  }
}

bool spin_then_poll(int fd, std::chrono::microseconds spin, std::chrono::milliseconds wait) {
  pollfd p{fd, POLLIN, 0};
  if (spin.count() > 0) {
    const auto end = std::chrono::steady_clock::now() + spin;
    do {
      if (::poll(&p, 1, 0) > 0) return true;
      sched_yield();  // a runnable process on this core goes first: spinning must not starve workers
    } while (std::chrono::steady_clock::now() < end);
  }
  return ::poll(&p, 1, static_cast<int>(wait.count())) > 0;
}

void spin_for_input(int fd, std::chrono::microseconds spin, SpinPolicy& policy) {
  if (spin.count() <= 0 || !policy.should_spin()) return;
  policy.spun(spin_then_poll(fd, spin, std::chrono::milliseconds(0)));
}

namespace {
// The address of a unix socket at `path`; false when the path does not fit.
bool unix_address(const std::string& path, sockaddr_un& addr) {
  addr = sockaddr_un{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return false;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return true;
}
}  // namespace

int listen_unix(const std::string& path, std::string& err) {
  sockaddr_un addr;
  if (!unix_address(path, addr)) {
    err = "the path is too long for a unix socket";
    return -1;
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = std::generic_category().message(errno);
    return -1;
  }
  ::unlink(path.c_str());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 256) != 0) {
    err = std::generic_category().message(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

int connect_unix(const std::string& path) {
  sockaddr_un addr;
  if (!unix_address(path, addr)) return -1;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace gymfarm::transport

namespace gymfarm::transport {

StreamServer::~StreamServer() {
  if (listener_ >= 0) {
    ::close(listener_);
    ::unlink(path_.c_str());
  }
}

bool StreamServer::listen(const std::string& path, std::string& err) {
  listener_ = listen_unix(path, err);
  if (listener_ < 0) return false;
  path_ = path;
  ::chmod(path.c_str(), 0600);
  return true;
}

void StreamServer::fill(std::vector<zmq::pollitem_t>& items) const {
  items.push_back({nullptr, listener_, ZMQ_POLLIN, 0});
  for (const auto& [name, conn] : named_) {
    items.push_back({nullptr, conn->fd(), static_cast<short>(ZMQ_POLLIN | (conn->wants_write() ? ZMQ_POLLOUT : 0)), 0});
  }
  for (const auto& conn : unnamed_) items.push_back({nullptr, conn->fd(), ZMQ_POLLIN, 0});
}

// Named connections first, then unnamed ones, in fill()'s order: a connection named while its
// messages are read moves to named_ after that pass. Closing happens outside the passes.
void StreamServer::process(const std::vector<zmq::pollitem_t>& items, std::size_t first, const OnMessage& on_message,
                           const OnClose& on_close) {
  std::size_t i = first;
  const bool incoming = items[i++].revents & ZMQ_POLLIN;
  backlog_ = false;
  std::vector<std::string> drop;
  for (auto& [name, conn] : named_) {
    const auto ev = items[i++].revents;
    bool ok = true;
    if (ev & ZMQ_POLLOUT) ok = conn->flush();
    if (ok && ((ev & (ZMQ_POLLIN | ZMQ_POLLERR)) || conn->buffered())) ok = read(conn, name, on_message, on_close);
    if (!ok) drop.push_back(name);
  }
  for (const auto& name : drop) named_.erase(name);
  const std::size_t before = unnamed_.size();
  for (std::size_t k = 0; k < before; ++k) {
    const bool ready = (items[i++].revents & ZMQ_POLLIN) || unnamed_[k]->buffered();
    if (ready && !read(unnamed_[k], "", on_message, on_close)) unnamed_[k].reset();
  }
  std::erase_if(unnamed_, [](const auto& c) { return !c; });
  if (!incoming) return;
  while (true) {
    const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    auto conn = std::make_unique<StreamConn>(fd, max_);
    if (name_of_) {
      unnamed_.push_back(std::move(conn));
    } else {
      const std::string name = std::string(kAcceptedPrefix) + std::to_string(++accepted_);
      named_[name] = std::move(conn);
    }
  }
}

bool StreamServer::read(std::unique_ptr<StreamConn>& conn, std::string name, const OnMessage& on_message,
                        const OnClose& on_close) {
  using R = StreamConn::Read;
  Frames frames;
  for (int n = 0; n < 256; ++n) {  // a bounded share of the turn
    const R r = conn->next(frames);
    if (r == R::Nothing) return true;
    if (r != R::Message) {
      if (!name.empty()) on_close(name, r == R::TooLarge);
      return false;
    }
    if (name.empty()) {
      name = name_of_(frames);
      if (name.empty()) return false;
      named_[name] = std::move(conn);
      return read(named_[name], name, on_message, on_close);
    }
    on_message(name, frames);
  }
  if (conn->buffered()) backlog_ = true;  // read on at the next turn, without waiting for poll
  return true;
}

bool StreamServer::send(const std::string& name, const std::vector<std::string_view>& frames) {
  auto it = named_.find(name);
  return it != named_.end() && it->second->send(frames);
}

bool StreamServer::send(const std::string& name, Frames& frames) {
  auto it = named_.find(name);
  return it != named_.end() && it->second->send(frames);
}

bool StreamServer::send(const std::string& name, const std::vector<std::string_view>& frames,
                        const std::vector<int>& fds) {
  auto it = named_.find(name);
  return it != named_.end() && it->second->send(frames, fds);
}

}  // namespace gymfarm::transport
