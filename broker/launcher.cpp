#include "broker/launcher.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <boost/process.hpp>
#include <boost/process/extend.hpp>

namespace bp = boost::process;

namespace gymfarm::broker {

struct Launcher::Child {
  bp::child process;
};

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = sigabbrev_np(sig);
    return "killed by signal " + std::to_string(sig) + (name ? std::string(" (SIG") + name + ")" : "");
  }
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  return "ended with status " + std::to_string(status);
}

Launcher::Launcher() = default;

Launcher::~Launcher() {
  for (auto& [pid, c] : children_) ::kill(pid, SIGKILL);
  for (auto& [pid, c] : children_) {
    std::error_code ec;
    c->process.wait(ec);
  }
}

int Launcher::spawn(const std::string& exe, const std::vector<std::string>& args, std::string& err,
                    unsigned long long memory_bytes, unsigned long long cpu_seconds) {
  const pid_t parent = ::getpid();
  try {
    auto c = std::make_unique<Child>(Child{bp::child(
        bp::exe = exe, bp::args = args,
        bp::extend::on_exec_setup = [parent, memory_bytes, cpu_seconds](auto&) {
          if (memory_bytes) {
            rlimit r{memory_bytes, memory_bytes};
            setrlimit(RLIMIT_AS, &r);
          }
          if (cpu_seconds) {
            rlimit r{cpu_seconds, cpu_seconds + 2};  // SIGXCPU at the soft limit, SIGKILL 2 s later
            setrlimit(RLIMIT_CPU, &r);
          }
          sigset_t all;
          sigemptyset(&all);
          sigprocmask(SIG_SETMASK, &all, nullptr);
          prctl(PR_SET_PDEATHSIG, SIGKILL);
          if (getppid() != parent) _exit(70);  // the parent died before prctl took hold
        })});
    const int pid = c->process.id();
    children_.emplace(pid, std::move(c));
    return pid;
  } catch (const std::exception& e) {
    err = e.what();
    return 0;
  }
}

std::vector<Exited> Launcher::reap() {
  std::vector<Exited> out;
  for (auto it = children_.begin(); it != children_.end();) {
    std::error_code ec;
    if (!it->second->process.running(ec)) {
      out.push_back({it->first, it->second->process.native_exit_code()});
      it = children_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

void Launcher::kill(int pid, int sig) {
  if (children_.count(pid)) ::kill(pid, sig);
}

}  // namespace gymfarm::broker
