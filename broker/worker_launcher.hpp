#pragma once
// How the pool supervisor starts a worker for a slot, behind one interface: a fresh process
// (ProcessLauncher) or a fork of the zygote (ZygoteLauncher, falling back to a fresh process while
// no zygote runs). Tests use a fake that records launches (tests/unit/broker/fake_launcher.hpp).
#include <cstddef>
#include <string>
#include <vector>

#include "broker/launcher.hpp"
#include "broker/zygote.hpp"

namespace gymfarm::broker {

struct Launch {
  int pid = 0;        // > 0: the process runs; 0 with error empty: it comes later (the zygote answers)
  std::string error;  // why it could not start (pid is 0)
  bool ok() const { return error.empty(); }
};

class WorkerLauncher {
 public:
  virtual ~WorkerLauncher() = default;
  // Starts a worker for slot `slot` that says `identity` on its link and heartbeats.
  virtual Launch launch(std::size_t slot, const std::string& identity) = 0;
  // Sends `sig` to a worker this launcher started (or whose pid arrived later).
  virtual void kill(int pid, int sig) = 0;
};

// Today's fresh start: `exe args... --identity <identity>` with the per-worker rlimits.
class ProcessLauncher final : public WorkerLauncher {
 public:
  ProcessLauncher(Launcher& launcher, std::string exe, std::vector<std::string> args,
                  unsigned long long memory_bytes = 0, unsigned long long cpu_seconds = 0)
      : launcher_(launcher),
        exe_(std::move(exe)),
        args_(std::move(args)),
        memory_bytes_(memory_bytes),
        cpu_seconds_(cpu_seconds) {}
  Launch launch(std::size_t slot, const std::string& identity) override;
  void kill(int pid, int sig) override { launcher_.kill(pid, sig); }

 private:
  Launcher& launcher_;
  std::string exe_;
  std::vector<std::string> args_;
  unsigned long long memory_bytes_;
  unsigned long long cpu_seconds_;
};

// Asks the zygote to fork the worker (its pid comes with the zygote's answer: Launch.pid 0); while
// the zygote is not running, or refuses the request, the fallback starts it.
class ZygoteLauncher final : public WorkerLauncher {
 public:
  ZygoteLauncher(Zygote& zygote, Launcher& launcher, WorkerLauncher& fallback)
      : zygote_(zygote), launcher_(launcher), fallback_(fallback) {}
  Launch launch(std::size_t slot, const std::string& identity) override;
  void kill(int pid, int sig) override { launcher_.kill(pid, sig); }

 private:
  Zygote& zygote_;
  Launcher& launcher_;
  WorkerLauncher& fallback_;
};

}  // namespace gymfarm::broker
