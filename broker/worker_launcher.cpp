#include "broker/worker_launcher.hpp"

namespace gymfarm::broker {

Launch ProcessLauncher::launch(std::size_t /*slot*/, const std::string& identity) {
  auto args = args_;
  args.push_back("--identity");
  args.push_back(identity);
  Launch out;
  out.pid = launcher_.spawn(exe_, args, out.error, memory_bytes_, cpu_seconds_);
  if (out.pid == 0 && out.error.empty()) out.error = "the process did not start";
  return out;
}

Launch ZygoteLauncher::launch(std::size_t slot, const std::string& identity) {
  if (zygote_.alive() && zygote_.request(identity)) return {};  // the pid comes with the zygote's answer
  return fallback_.launch(slot, identity);
}

}  // namespace gymfarm::broker
