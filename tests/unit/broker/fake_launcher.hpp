#pragma once
// A WorkerLauncher that starts nothing: it records each launch and kill, hands out pids from 1000
// on, and fails the launches it is told to fail.
#include <csignal>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "broker/worker_launcher.hpp"

namespace gymfarm::broker::testing {

class FakeLauncher final : public WorkerLauncher {
 public:
  struct Started {
    std::size_t slot = 0;
    std::string identity;
    int pid = 0;
  };
  Launch launch(std::size_t slot, const std::string& identity) override {
    if (fail_next > 0) {
      --fail_next;
      failed.push_back(slot);
      return {0, "fake launch failure"};
    }
    const int pid = pending ? 0 : next_pid++;
    launches.push_back({slot, identity, pid});
    return {pid, ""};
  }
  void kill(int pid, int sig) override { kills.emplace_back(pid, sig); }

  int fail_next = 0;     // this many launches fail
  bool pending = false;  // launches answer later (the zygote's way): pid 0
  int next_pid = 1000;
  std::vector<Started> launches;
  std::vector<std::size_t> failed;
  std::vector<std::pair<int, int>> kills;  // (pid, signal)
};

}  // namespace gymfarm::broker::testing
