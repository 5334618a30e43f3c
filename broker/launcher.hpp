#pragma once
// Starts worker processes (Boost.Process) and reaps them. Children get PR_SET_PDEATHSIG(SIGKILL)
// between fork and exec, so a killed broker leaves no orphans.
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace gymfarm::broker {

struct Exited {
  int pid = 0;
  int status = 0;  // raw wait status
};

// "killed by signal 9 (SIGKILL)" or "exited with code 3".
std::string describe_exit(int status);

class Launcher {
 public:
  Launcher();
  ~Launcher();  // kills and reaps every child still running

  // Returns the pid, or 0 with err set.
  // Limits (0 = none) are set with setrlimit in the child: address space and CPU seconds.
  int spawn(const std::string& exe, const std::vector<std::string>& args, std::string& err,
            unsigned long long memory_bytes = 0, unsigned long long cpu_seconds = 0);
  std::vector<Exited> reap();
  void kill(int pid, int sig);
  std::size_t running() const { return children_.size(); }

 private:
  struct Child;
  std::unordered_map<int, std::unique_ptr<Child>> children_;
};

}  // namespace gymfarm::broker
