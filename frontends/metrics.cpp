#include "frontends/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <map>

namespace gymfarm::frontends {

using protocol::Value;

namespace {

// The states a worker slot can be in (broker/worker_registry.hpp), always exported (0 when none).
constexpr const char* kWorkerStates[] = {"dead", "starting", "idle", "assigned", "stopping"};

double number(const Value* v, double fallback = 0) { return v && v->is_number() ? v->as_double() : fallback; }

std::string text(const Value* v) { return v && v->is_string() ? v->as_string() : std::string(); }

const protocol::Array& array_of(const Value* v) {
  static const protocol::Array kEmpty;
  return v && v->is_array() ? v->as_array() : kEmpty;
}

const protocol::Map& map_of(const Value* v) {
  static const protocol::Map kEmpty;
  return v && v->is_map() ? v->as_map() : kEmpty;
}

void gauge(prometheus::Registry& r, const std::string& name, const std::string& help, double value) {
  prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({}).Set(value);
}

void counter(prometheus::Registry& r, const std::string& name, const std::string& help, double value) {
  prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({}).Increment(value);
}

}  // namespace

std::string render_metrics(const Value& stats, const GatewayCounts& gateway) {
  prometheus::Registry reg;

  // workers by state, and each worker's memory and queue
  auto& workers = prometheus::BuildGauge().Name("gymfarm_workers").Help("Worker processes by state.").Register(reg);
  auto& rss = prometheus::BuildGauge()
                  .Name("gymfarm_worker_rss_bytes")
                  .Help("Resident set size of each worker process.")
                  .Register(reg);
  auto& pss = prometheus::BuildGauge()
                  .Name("gymfarm_worker_pss_bytes")
                  .Help("Proportional set size of each worker process (zygote pages shared out).")
                  .Register(reg);
  auto& queued = prometheus::BuildGauge()
                     .Name("gymfarm_worker_queued_requests")
                     .Help("Requests queued for each worker behind the one in flight.")
                     .Register(reg);
  std::map<std::string, double> by_state;
  for (const char* s : kWorkerStates) by_state[s] = 0;
  double restarts = 0, queue_depth = 0;
  for (const Value& w : array_of(stats.find("workers"))) {
    by_state[text(w.find("state"))] += 1;
    const std::string index = std::to_string(static_cast<long long>(number(w.find("worker"), -1)));
    rss.Add({{"worker", index}}).Set(number(w.find("rss_bytes")));
    pss.Add({{"worker", index}}).Set(number(w.find("pss_bytes")));
    queued.Add({{"worker", index}}).Set(number(w.find("queued")));
    restarts += number(w.find("restarts"));
    queue_depth += number(w.find("queued"));
  }
  for (const auto& [state, n] : by_state) workers.Add({{"state", state}}).Set(n);
  gauge(reg, "gymfarm_queued_requests", "Requests queued for workers, in all.", queue_depth);
  counter(reg, "gymfarm_worker_restarts_total", "Worker processes replaced, over the workers now in the pool.",
          restarts);

  // every restart since the farm started, by the class of its reason (a fixed set: broker/restart_budget.hpp)
  auto& lifetime = prometheus::BuildCounter()
                       .Name("gymfarm_worker_restarts_by_reason_total")
                       .Help("Worker restarts since the farm started, by the class of their reason.")
                       .Register(reg);
  for (const auto& [reason, n] : map_of(stats.find("restarts_by_reason"))) {
    lifetime.Add({{"reason", reason}}).Increment(number(&n));
  }

  // restarts in the budget's window by reason, and the budget
  auto& recent = prometheus::BuildGauge()
                     .Name("gymfarm_recent_worker_restarts")
                     .Help("Worker restarts within the restart budget's window, by reason.")
                     .Register(reg);
  std::map<std::string, double> by_reason;
  for (const Value& e : array_of(stats.find("recent_restarts"))) by_reason[text(e.find("reason"))] += 1;
  for (const auto& [reason, n] : by_reason) recent.Add({{"reason", reason}}).Set(n);
  const Value* budget = stats.find("restart_budget");
  const Value none;
  if (!budget) budget = &none;
  gauge(reg, "gymfarm_restart_budget_used", "Restarts counted against the budget in its window.",
        number(budget->find("used")));
  gauge(reg, "gymfarm_restart_budget_limit", "Restarts the budget allows in its window.",
        number(budget->find("limit")));
  gauge(reg, "gymfarm_restart_budget_window_seconds", "The restart budget's window.", number(budget->find("window_s")));

  // the pool
  const Value* pool = stats.find("pool");
  if (!pool) pool = &none;
  gauge(reg, "gymfarm_pool_warm_workers", "Workers kept warm (--workers).", number(pool->find("warm")));
  gauge(reg, "gymfarm_pool_max_workers", "The pool's bound (--max-workers).", number(pool->find("max")));
  gauge(reg, "gymfarm_pool_live_workers", "Worker slots the pool keeps now.", number(pool->find("live")));

  // instances by dialect: who made each (the broker's owners, the gateway's tables: instance_owners.hpp)
  auto& inst = prometheus::BuildGauge()
                   .Name("gymfarm_instances")
                   .Help("Env instances by the dialect that made them (native: the native protocol).")
                   .Register(reg);
  for (const auto& [dialect, n] : gateway.instances) inst.Add({{"dialect", dialect}}).Set(static_cast<double>(n));

  // requests: answers by verb and code, latency per verb
  auto& requests = prometheus::BuildCounter()
                       .Name("gymfarm_requests_total")
                       .Help("Requests answered by the broker, by verb and error code (ok: a result).")
                       .Register(reg);
  auto& latency = prometheus::BuildHistogram()
                      .Name("gymfarm_request_duration_seconds")
                      .Help("Time from the broker reading a request to its answer, by verb.")
                      .Register(reg);
  for (const auto& [verb, a] : map_of(stats.find("answers"))) {
    for (const auto& [code, n] : map_of(a.find("codes"))) {
      requests.Add({{"verb", verb}, {"code", code}}).Increment(number(&n));
    }
    prometheus::Histogram::BucketBoundaries bounds;
    for (const Value& b : array_of(a.find("le"))) bounds.push_back(number(&b));
    std::vector<double> counts;
    for (const Value& n : array_of(a.find("buckets"))) counts.push_back(number(&n));
    if (counts.size() != bounds.size() + 1) continue;  // not a histogram this gateway can read
    latency.Add({{"verb", verb}}, bounds).ObserveMultiple(counts, number(a.find("sum_s")));
  }
  counter(reg, "gymfarm_requests_received_total", "Client requests the broker received.",
          number(stats.find("requests")));
  counter(reg, "gymfarm_env_steps_total",
          "Env steps the workers made (step, step_batch parts, step_vec rows, steps through shared memory).",
          number(stats.find("env_steps")));
  const Value* shm = stats.find("shm");
  counter(reg, "gymfarm_shm_requests_total",
          "Steps and resets local clients sent through shared-memory slabs (not in gymfarm_requests_total).",
          number(shm ? shm->find("answered") : nullptr));
  gauge(reg, "gymfarm_shm_slabs", "Shared-memory slabs granted to local clients' instances.",
        number(shm ? shm->find("slabs") : nullptr));
  const Value* hb = stats.find("heartbeats");
  counter(reg, "gymfarm_heartbeats_received_total", "Worker heartbeats the broker received.",
          number(hb ? hb->find("received") : nullptr));

  // sessions and connections
  gauge(reg, "gymfarm_sessions", "Open native-protocol sessions (the gateway's own clients included).",
        number(stats.find("sessions")));
  auto& conns = prometheus::BuildGauge()
                    .Name("gymfarm_connections")
                    .Help("Open HTTP and WebSocket connections per gateway frontend.")
                    .Register(reg);
  for (const auto& [frontend, n] : gateway.connections) conns.Add({{"frontend", frontend}}).Set(static_cast<double>(n));
  gauge(reg, "gymfarm_dashboard_streams", "Open /dashboard/stream/ viewers (live frames).",
        static_cast<double>(gateway.dashboard_streams));
  auto& gw_steps = prometheus::BuildCounter()
                       .Name("gymfarm_gateway_steps_total")
                       .Help(
                           "Gymie and REST steps the gateway's I/O thread posted to slabs, by where they "
                           "finished: on the I/O thread, or handed over to a pool thread.")
                       .Register(reg);
  gw_steps.Add({{"finished", "io_thread"}}).Increment(static_cast<double>(gateway.inline_steps));
  gw_steps.Add({{"finished", "pool"}}).Increment(static_cast<double>(gateway.handed_over_steps));

  return prometheus::TextSerializer().Serialize(reg.Collect());
}

bool farm_ready(const Value& stats) {
  std::size_t serving = 0, idle = 0;
  for (const Value& w : array_of(stats.find("workers"))) {
    const std::string s = text(w.find("state"));
    if (s == "idle") ++idle;
    if (s == "idle" || s == "assigned") ++serving;
  }
  const Value* pool = stats.find("pool");
  const bool below_bound = pool && number(pool->find("live")) < number(pool->find("max"));
  return serving > 0 && (idle > 0 || below_bound);
}

}  // namespace gymfarm::frontends
