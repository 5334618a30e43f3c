#pragma once
// Starts worker processes (Boost.Process) and reaps them. Children get PR_SET_PDEATHSIG(SIGKILL)
// between fork and exec, so a killed broker leaves no orphans. Processes that became the broker's
// children by re-parenting (workers forked by the zygote; the broker is a child subreaper) are
// adopted and reaped the same way.
#include <string>
#include <unordered_map>
#include <unordered_set>
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
  // stdin_fd / stdout_fd (when >= 0) become the child's stdin / stdout.
  int spawn(const std::string& exe, const std::vector<std::string>& args, std::string& err,
            unsigned long long memory_bytes = 0, unsigned long long cpu_seconds = 0, int stdin_fd = -1,
            int stdout_fd = -1);
  // Takes a re-parented child into care: it is reaped and may be killed from now on (an exit that
  // happened before is reported by the next reap()).
  void adopt(int pid);
  std::vector<Exited> reap();
  void kill(int pid, int sig);
  std::size_t running() const { return children_.size(); }

 private:
  std::unordered_set<int> children_;
  std::unordered_map<int, int> unclaimed_;  // exits of children not (yet) adopted: pid -> status
};

}  // namespace gymfarm::broker
