#include "cli/stderr_relay.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <string_view>
#include <system_error>

#include "protocol/log.hpp"

namespace gymfarm::cli {

std::string StderrRelay::start() {
  if (thread_.joinable()) return "";
  const int saved = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
  if (saved < 0) return std::string("cannot duplicate stderr: ") + std::generic_category().message(errno);
  int p[2] = {-1, -1};
  if (::pipe2(p, O_CLOEXEC) != 0) {
    std::string err = std::string("cannot make a pipe for stderr: ") + std::generic_category().message(errno);
    ::close(saved);
    return err;
  }
  protocol::set_log_fd(saved);
  if (::dup2(p[1], STDERR_FILENO) < 0) {  // fd 2 itself is inherited by workers (dup2 clears CLOEXEC)
    std::string err = std::string("cannot redirect stderr: ") + std::generic_category().message(errno);
    protocol::set_log_fd(STDERR_FILENO);
    ::close(saved);
    ::close(p[0]);
    ::close(p[1]);
    return err;
  }
  ::close(p[1]);
  saved_stderr_ = saved;
  read_fd_ = p[0];
  stopping_ = false;
  thread_ = std::thread([this] { relay(); });
  return "";
}

void StderrRelay::relay() {
  std::string pending;
  char buf[4096];
  auto flush_lines = [&pending](bool all) {
    std::size_t from = 0;
    while (true) {
      const std::size_t nl = pending.find('\n', from);
      if (nl == std::string::npos) break;
      std::string_view line(pending.data() + from, nl - from);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      protocol::log_line(protocol::LogLevel::Info, line, {{"source", "stderr"}}, "");
      from = nl + 1;
    }
    pending.erase(0, from);
    while (pending.size() >= kMaxLine || (all && !pending.empty())) {
      const std::size_t n = std::min(pending.size(), kMaxLine);
      protocol::log_line(protocol::LogLevel::Info, std::string_view(pending.data(), n), {{"source", "stderr"}}, "");
      pending.erase(0, n);
    }
  };
  std::chrono::steady_clock::time_point give_up{};
  while (true) {
    if (stopping_ && give_up == std::chrono::steady_clock::time_point{})
      give_up = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    if (give_up != std::chrono::steady_clock::time_point{} && std::chrono::steady_clock::now() >= give_up) break;
    pollfd pfd{read_fd_, POLLIN, 0};
    const int r = ::poll(&pfd, 1, 100);
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    const ssize_t n = ::read(read_fd_, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) break;  // every writer closed it
    pending.append(buf, static_cast<std::size_t>(n));
    flush_lines(false);
  }
  flush_lines(true);
}

void StderrRelay::stop() {
  if (!thread_.joinable()) return;
  ::dup2(saved_stderr_, STDERR_FILENO);  // closes this process's write end of the pipe
  protocol::set_log_fd(STDERR_FILENO);
  stopping_ = true;
  thread_.join();
  ::close(read_fd_);
  ::close(saved_stderr_);
  read_fd_ = saved_stderr_ = -1;
}

}  // namespace gymfarm::cli
