#include "broker/stats.hpp"

#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "protocol/frames.hpp"

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

namespace {

// The verbs a client may send; anything else is counted as "other".
constexpr std::array<std::string_view, 17> kClientVerbs = {
    protocol::verb::kHello,     protocol::verb::kPing,    protocol::verb::kStats, protocol::verb::kList,
    protocol::verb::kEnvs,      protocol::verb::kMake,    protocol::verb::kReset, protocol::verb::kStep,
    protocol::verb::kStepBatch, protocol::verb::kStepVec, protocol::verb::kClose, protocol::verb::kSpaces,
    protocol::verb::kSample,    protocol::verb::kRender,  protocol::verb::kCall,  protocol::verb::kGetAttr,
    protocol::verb::kSetAttr};

// Who made each instance a worker hosts, in the order of its `instances`: the session's number and
// name (as its hello gave it), how it reached the farm, and whether the instance is shared.
Value owners_of(const WorkerSlot& slot, const Admission& admission) {
  protocol::Array out;
  for (const auto& h : slot.hosted) {
    Value o(protocol::Map{});
    if (const auto* owner = admission.owner(h.instance)) {
      o.set("session", static_cast<uint64_t>(owner->session.number));
      o.set("client", owner->session.name);
      o.set("via", std::string(client_via(owner->client)));
      o.set("shared", owner->shared);
    }
    out.push_back(std::move(o));
  }
  return Value(std::move(out));
}

}  // namespace

void RequestCounters::answered(std::string_view verb, std::string_view code, Duration took) {
  if (std::find(kClientVerbs.begin(), kClientVerbs.end(), verb) == kClientVerbs.end()) verb = "other";
  auto it = verbs_.find(verb);
  if (it == verbs_.end()) it = verbs_.emplace(std::string(verb), Verb{}).first;
  Verb& v = it->second;
  auto c = v.codes.find(code);
  if (c == v.codes.end()) {
    if (v.codes.size() >= kMaxCodes) code = "other";
    c = v.codes.try_emplace(std::string(code), 0).first;
  }
  ++c->second;
  const double s = std::max(0.0, std::chrono::duration<double>(took).count());
  const auto b = std::lower_bound(kBuckets.begin(), kBuckets.end(), s) - kBuckets.begin();
  ++v.buckets[static_cast<std::size_t>(b)];
  v.sum_s += s;
  ++v.count;
}

Value RequestCounters::to_value() const {
  Value out(protocol::Map{});
  for (const auto& [name, v] : verbs_) {
    Value codes(protocol::Map{});
    for (const auto& [code, n] : v.codes) codes.set(code, static_cast<uint64_t>(n));
    protocol::Array le, buckets;
    for (double b : kBuckets) le.push_back(Value(b));
    for (uint64_t n : v.buckets) buckets.push_back(Value(static_cast<uint64_t>(n)));
    out.set(name, Value(protocol::Map{{"codes", std::move(codes)},
                                      {"le", Value(std::move(le))},
                                      {"buckets", Value(std::move(buckets))},
                                      {"sum_s", v.sum_s},
                                      {"count", static_cast<uint64_t>(v.count)}}));
  }
  return out;
}

Value Stats::report(const WorkerRegistry& registry, const RestartBudget& budget, std::size_t instances, Pool pool,
                    const Heartbeats& hb, TimePoint now, const std::string& frontend, int64_t pid, std::size_t sessions,
                    const Admission* owners) const {
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
    if (owners) w.set("owners", owners_of(s, *owners));
    w.set("steps", static_cast<uint64_t>(s.steps));
    w.set("rss_bytes", static_cast<int64_t>(rss_(s.pid)));
    w.set("pss_bytes", static_cast<int64_t>(pss_(s.pid)));
    w.set("restarts", static_cast<uint64_t>(s.restarts));
    w.set("last_exit", s.last_exit);
    w.set("queued", static_cast<uint64_t>(s.queue.size()));
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
  // every restart since the farm started, by the class of its reason; the last one's own reason
  Value by_reason(protocol::Map{});
  for (const auto& [reason, n] : budget.totals()) by_reason.set(reason, static_cast<uint64_t>(n));
  v.set("restarts_total", static_cast<uint64_t>(budget.total()));
  v.set("restarts_by_reason", std::move(by_reason));
  if (!budget.log().empty()) {
    const auto& e = budget.log().back();
    Value last(protocol::Map{});
    last.set("reason", e.reason);
    last.set("class", restart_reason_class(e.reason));
    last.set("worker", static_cast<int64_t>(e.worker));
    last.set("seconds_ago", std::chrono::duration<double>(now - e.at).count());
    v.set("last_restart", std::move(last));
  }
  v.set("instances", static_cast<int64_t>(instances));
  v.set("pool", Value(protocol::Map{{"warm", static_cast<uint64_t>(pool.warm)},
                                    {"max", static_cast<uint64_t>(pool.max)},
                                    {"live", static_cast<uint64_t>(registry.wanted())}}));
  v.set("requests", static_cast<uint64_t>(requests));
  v.set("answers", answers.to_value());
  v.set("env_steps", static_cast<uint64_t>(answers.env_steps));
  v.set("sessions", static_cast<uint64_t>(sessions));
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
