#pragma once
// The broker's side of the zygote: a `gymfarm-worker --zygote` that has loaded Python, numpy,
// gymnasium and the --import modules once and forks a worker per request (worker/main.cpp). The
// workers are re-parented to the broker (a child subreaper), so the broker reaps them and reads
// their exit status exactly as for freshly started workers.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "broker/launcher.hpp"

namespace gymfarm::broker {

class Zygote {
 public:
  ~Zygote();
  // Starts `exe --zygote args...`; false with err set when it cannot.
  bool start(Launcher& launcher, const std::string& exe, std::vector<std::string> args, std::string& err);
  bool alive() const { return pid_ > 0; }
  int pid() const { return pid_; }
  int reply_fd() const { return reply_; }
  // Asks for a worker with this identity; false when the zygote is gone.
  bool request(const std::string& identity);
  // Asks what a make would refuse about this env id alone (host.py check_env_id), answered by
  // key; false when the zygote is gone.
  bool check(uint64_t key, std::string_view env_id, bool aliases, bool strict_kwargs);
  // The answers that arrived: (identity, pid), pid 0 when the fork failed. "ready" lines are skipped;
  // answers to check() are kept for take_checks().
  std::vector<std::pair<std::string, int>> read();
  struct CheckAnswer {
    uint64_t key = 0;
    bool bad = false;  // the id is one a make refuses: message, kind and Gymnasium error say how
    std::string message, kind, gymnasium_error;
  };
  std::vector<CheckAnswer> take_checks() { return std::exchange(checks_, {}); }
  // The zygote exited: forget it (later workers start fresh).
  void gone();

 private:
  int pid_ = 0;
  int cmd_ = -1;
  int reply_ = -1;
  std::string buf_;
  std::vector<CheckAnswer> checks_;
};

}  // namespace gymfarm::broker
