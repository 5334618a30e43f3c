#include "broker/stats.hpp"

#include <unistd.h>

#include <fstream>

namespace gymfarm::broker {

using protocol::Value;

long long proc_rss_bytes(int pid) {
  if (pid <= 0) return 0;
  std::ifstream f("/proc/" + std::to_string(pid) + "/statm");
  long long size = 0, resident = 0;
  if (!(f >> size >> resident)) return 0;
  return resident * sysconf(_SC_PAGESIZE);
}

// Proportional set size: shared pages (the zygote's) split among the processes that share them.
long long proc_pss_bytes(int pid) {
  if (pid <= 0) return 0;
  std::ifstream f("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string key;
  long long kb = 0;
  while (f >> key) {
    if (key == "Pss:" && (f >> kb)) return kb * 1024;
    f.ignore(1 << 12, '\n');
  }
  return 0;
}

Value Stats::report(const WorkerRegistry& registry, const RestartBudget& budget, std::size_t instances, Pool pool,
                    const Heartbeats& hb, TimePoint now, const std::string& frontend, int64_t pid) const {
  protocol::Array workers;
  for (const auto& s : registry.slots()) {
    if (!s.wanted && s.state == WorkerState::Dead) continue;  // retired, no process
    Value w(protocol::Map{});
    w.set("worker", static_cast<int64_t>(s.index));
    w.set("pid", s.pid);
    w.set("state", to_string(s.state));
    w.set("instance", s.hosted.empty() ? std::string() : s.hosted.front().instance);
    w.set("env_id", s.hosted.empty() ? std::string() : s.hosted.front().env_id);
    protocol::Array hosted;
    for (const auto& h : s.hosted) hosted.push_back(Value(h.instance));
    w.set("instances", std::move(hosted));
    w.set("steps", static_cast<uint64_t>(s.steps));
    w.set("rss_bytes", static_cast<int64_t>(rss_(s.pid)));
    w.set("pss_bytes", static_cast<int64_t>(pss_(s.pid)));
    w.set("restarts", static_cast<uint64_t>(s.restarts));
    w.set("last_exit", s.last_exit);
    workers.push_back(std::move(w));
  }
  protocol::Array restarts;
  for (const auto& e : budget.log()) {
    Value r(protocol::Map{});
    r.set("seconds_ago", std::chrono::duration<double>(now - e.at).count());
    r.set("worker", static_cast<int64_t>(e.worker));
    r.set("reason", e.reason);
    restarts.push_back(std::move(r));
  }
  Value b(protocol::Map{});
  b.set("limit", static_cast<uint64_t>(budget.limit()));
  b.set("window_s", std::chrono::duration<double>(budget.window()).count());
  b.set("used", static_cast<uint64_t>(budget.used(now)));
  Value v(protocol::Map{});
  v.set("workers", std::move(workers));
  v.set("restart_budget", std::move(b));
  v.set("recent_restarts", std::move(restarts));
  v.set("instances", static_cast<int64_t>(instances));
  v.set("pool", Value(protocol::Map{{"warm", static_cast<uint64_t>(pool.warm)},
                                    {"max", static_cast<uint64_t>(pool.max)},
                                    {"live", static_cast<uint64_t>(registry.wanted())}}));
  v.set("requests", static_cast<uint64_t>(requests));
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  v.set("heartbeats",
        Value(protocol::Map{{"period_ms", static_cast<int64_t>(duration_cast<milliseconds>(hb.period).count())},
                            {"max_rate", static_cast<uint64_t>(hb.max_rate)},
                            {"received", static_cast<uint64_t>(heartbeats)},
                            {"excused_ms", static_cast<int64_t>(duration_cast<milliseconds>(hb.excused).count())}}));
  v.set("frontend", frontend);
  v.set("pid", pid);
  return v;
}

}  // namespace gymfarm::broker
