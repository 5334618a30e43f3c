#include "worker/zygote.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <thread>
#include <vector>

#include <pybind11/embed.h>
#include <zmq.hpp>

#include "protocol/token.hpp"
#include "worker/serve.hpp"

namespace gymfarm::worker {

void become_worker(Args args, Host& host, const std::string& identity, pid_t intermediate, int reply_fd) {
  // Wait until the intermediate process has exited and the broker (a child subreaper) adopted us;
  // only then does PR_SET_PDEATHSIG refer to the broker.
  for (int i = 0; i < 20000 && getppid() == intermediate; ++i) usleep(100);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != args.parent) _exit(0);
  // The zygote closed what it inherited when it started; of its own descriptors only the reply pipe
  // and the command pipe (its stdin) are not Python's, and neither is this worker's.
  ::close(reply_fd);
  if (int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC); null >= 0) {
    dup2(null, STDIN_FILENO);  // the zygote's command pipe is not ours
    ::close(null);
  } else {
    ::close(STDIN_FILENO);
  }
  if (args.memory_limit) {
    rlimit r{args.memory_limit, args.memory_limit};
    setrlimit(RLIMIT_AS, &r);
  }
  if (args.cpu_limit) {
    rlimit r{args.cpu_limit, args.cpu_limit + 2};  // SIGXCPU at the soft limit, SIGKILL 2 s later
    setrlimit(RLIMIT_CPU, &r);
  }
  PyOS_AfterFork_Child();
  prctl(PR_SET_NAME, "gf-worker");  // its argv is the zygote's; ps -o comm tells them apart
  args.identity = identity;
  zmq::context_t ctx(1);
  HeartbeatControl hbc;
  std::thread hb;
  {
    py::gil_scoped_release nogil;
    hb = std::thread(heartbeat_loop, std::ref(ctx), std::cref(args), std::ref(hbc));
  }
  try {
    host.after_fork();
  } catch (py::error_already_set& e) {
    std::fprintf(stderr, "[gymfarm-worker] after fork: %s\n", e.what());
  }
  serve(args, host);
  finish(hbc, hb, 0);
}

std::string check_answer(Host& host, const std::string& args) {
  std::vector<std::string> f;
  for (std::size_t at = 0; at <= args.size();) {
    const auto sp = std::min(args.find(' ', at), args.size());
    f.push_back(args.substr(at, sp - at));
    at = sp + 1;
  }
  if (f.size() != 4) return "check " + f[0] + " ok\n";  // a line it cannot read: the make decides
  const auto env_id = gymfarm::protocol::from_hex(f[1]);
  const auto bad = env_id ? host.check_env_id(*env_id, f[2] != "0", f[3] == "1") : std::nullopt;
  if (!bad) return "check " + f[0] + " ok\n";
  using gymfarm::protocol::to_hex;
  return "check " + f[0] + " bad " + to_hex((*bad)[0]) + " " + to_hex((*bad)[1]) + " " + to_hex((*bad)[2]) + "\n";
}

void zygote(const Args& args, Host& host) {
  // stdout is the reply pipe; whatever envs print goes to stderr instead
  const int reply_fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
  dup2(STDERR_FILENO, STDOUT_FILENO);
  auto answer = [&](const std::string& line) {
    if (::write(reply_fd, line.data(), line.size()) < 0) _exit(0);
  };
  answer("ready " + std::to_string(getpid()) + "\n");
  char buf[512];
  std::string pending;
  while (true) {
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n <= 0) _exit(0);  // the broker closed the pipe or is gone
    pending.append(buf, static_cast<std::size_t>(n));
    std::size_t eol;
    while ((eol = pending.find('\n')) != std::string::npos) {
      const std::string line = pending.substr(0, eol);
      pending.erase(0, eol + 1);
      if (line.rfind("check ", 0) == 0) {  // -> "check KEY ok|bad ..."
        answer(check_answer(host, line.substr(6)));
        continue;
      }
      if (line.rfind("spawn ", 0) != 0) continue;
      const std::string identity = line.substr(6);
      PyOS_BeforeFork();
      const pid_t mid = fork();
      if (mid == 0) {
        const pid_t self = getpid();
        const pid_t w = fork();
        if (w == 0) become_worker(args, host, identity, self, reply_fd);
        answer(identity + " " + std::to_string(w > 0 ? w : 0) + "\n");
        _exit(0);
      }
      PyOS_AfterFork_Parent();
      if (mid < 0) {
        answer(identity + " 0\n");
      } else {
        int status = 0;
        waitpid(mid, &status, 0);
      }
    }
  }
}

}  // namespace gymfarm::worker
