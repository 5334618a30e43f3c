#pragma once
// With `--log-format json`, what is written to the farm's stderr by anything but the logger (the
// workers' and the zygote's own lines, env output, Python warnings and tracebacks, a library's
// message) reaches the log as JSON lines too: fd 2 becomes a pipe that a thread reads, and each
// line it carries is logged as {"msg": the line, "source": "stderr"}; the logger itself writes to
// the original stderr. Lines over kMaxLine bytes are split.
#include <atomic>
#include <cstddef>
#include <string>
#include <thread>

namespace gymfarm::cli {

class StderrRelay {
 public:
  static constexpr std::size_t kMaxLine = std::size_t{16} * 1024;

  StderrRelay() = default;
  ~StderrRelay() { stop(); }
  StderrRelay(const StderrRelay&) = delete;
  StderrRelay& operator=(const StderrRelay&) = delete;

  // Call with the signals the broker takes blocked (the thread inherits the mask). Returns an
  // error text, empty on success; on failure stderr is left as it was.
  std::string start();
  // Gives fd 2 back to the original stderr, relays what is still in the pipe (waiting at most a
  // second for processes that still hold it), and joins the thread. Idempotent.
  void stop();

 private:
  void relay();

  int saved_stderr_ = -1;
  int read_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace gymfarm::cli
