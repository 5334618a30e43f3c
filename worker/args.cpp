#include "worker/args.hpp"

#include <dirent.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace gymfarm::worker {

namespace {

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "gymfarm-worker: %s\n"
               "usage: gymfarm-worker --backend ENDPOINT --link PATH (--identity ID | --zygote) [--parent PID] "
               "[--python PATH] [--import MODULE]... [--memory-limit BYTES] [--cpu-limit SECONDS] "
               "[--spin-us N]\n"
               "Started by `gymfarm start`; not meant to be run by hand.\n",
               msg);
  std::exit(2);  // NOLINT(concurrency-mt-unsafe): arguments are parsed before any thread starts
}

}  // namespace

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + k).c_str());
      return argv[++i];
    };
    if (k == "--backend") a.backend = value();
    else if (k == "--link") a.link = value();
    else if (k == "--identity") a.identity = value();
    else if (k == "--spin-us") a.spin_us = std::stol(value());
    else if (k == "--python") a.python = value();
    else if (k == "--import") a.imports.push_back(value());
    else if (k == "--parent") a.parent = static_cast<pid_t>(std::stol(value()));
    else if (k == "--memory-limit") a.memory_limit = std::stoull(value());
    else if (k == "--cpu-limit") a.cpu_limit = std::stoull(value());
    else if (k == "--zygote") a.zygote = true;
    else usage(("unknown option " + k).c_str());
  }
  if (a.backend.empty() || a.link.empty() || (a.identity.empty() && !a.zygote)) {
    usage("--backend, --link and --identity are required");
  }
  return a;
}

bool parent_gone(pid_t parent) { return parent != 0 && getppid() != parent; }

// close_range(2), else the entries of /proc/self/fd.
void close_inherited_fds() {
  if (::close_range(STDERR_FILENO + 1, ~0U, 0) == 0) return;
  std::vector<int> open;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      int fd = -1;
      std::from_chars(e->d_name, e->d_name + std::strlen(e->d_name), fd);
      if (fd > STDERR_FILENO && fd != ::dirfd(d)) open.push_back(fd);
    }
    ::closedir(d);
  } else {
    for (int fd = STDERR_FILENO + 1; fd < 65536; ++fd) open.push_back(fd);
  }
  for (int fd : open) ::close(fd);
}

}  // namespace gymfarm::worker
