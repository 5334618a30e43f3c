#include "broker/launcher.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/process.hpp>
#include <boost/process/extend.hpp>
#include <cstring>

namespace bp = boost::process;

namespace gymfarm::broker {

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
  for (int pid : children_) ::kill(pid, SIGKILL);
  for (int pid : children_) {
    int status = 0;
    ::waitpid(pid, &status, 0);
  }
}

int Launcher::spawn(const std::string& exe, const std::vector<std::string>& args, std::string& err,
                    unsigned long long memory_bytes, unsigned long long cpu_seconds, int stdin_fd, int stdout_fd) {
  const pid_t parent = ::getpid();
  try {
    bp::child c(
        bp::exe = exe, bp::args = args,
        bp::extend::on_exec_setup = [parent, memory_bytes, cpu_seconds, stdin_fd, stdout_fd](auto&) {
          if (stdin_fd >= 0) dup2(stdin_fd, STDIN_FILENO);
          if (stdout_fd >= 0) dup2(stdout_fd, STDOUT_FILENO);
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
          sigprocmask(SIG_SETMASK, &all, nullptr);  // NOLINT(concurrency-mt-unsafe): the forked child has one thread
          prctl(PR_SET_PDEATHSIG, SIGKILL);
          if (getppid() != parent) _exit(70);  // the parent died before prctl took hold
        });
    const int pid = c.id();
    c.detach();  // reaped by reap() with waitpid
    children_.insert(pid);
    return pid;
  } catch (const std::exception& e) {
    err = e.what();
    return 0;
  }
}

void Launcher::adopt(int pid) { children_.insert(pid); }

std::vector<Exited> Launcher::reap() {
  std::vector<Exited> out;
  int status = 0;
  pid_t pid;
  while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
    if (children_.erase(pid)) {
      out.push_back({pid, status});
    } else if (unclaimed_.size() < 4096) {
      unclaimed_[pid] = status;  // a zygote-forked worker that died before its pid reached us
    }
  }
  for (auto it = unclaimed_.begin(); it != unclaimed_.end();) {
    if (children_.erase(it->first)) {
      out.push_back({it->first, it->second});
      it = unclaimed_.erase(it);
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
