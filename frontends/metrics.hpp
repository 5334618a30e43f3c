#pragma once
// GET /metrics and GET /readyz, both read from the broker's `stats` reply (docs/protocol.md): the
// numbers `gymfarm status` shows. The text is Prometheus' exposition format, written by
// prometheus-cpp (a Registry filled from the reply, serialized with its TextSerializer). Pure
// functions of the reply and the gateway's own counts, so they are tested without sockets.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "protocol/value.hpp"

namespace gymfarm::frontends {

// What only the gateway knows.
struct GatewayCounts {
  std::vector<std::pair<std::string, std::size_t>> connections;  // open connections per frontend
  std::map<std::string, std::size_t> instances;                  // by dialect (instance_owners.hpp)
  std::size_t dashboard_streams = 0;                             // /dashboard/stream/ viewers
  uint64_t inline_steps = 0;       // Gymie and REST steps answered on an I/O thread (inline_step.hpp)
  uint64_t handed_over_steps = 0;  // posted there, finished on the pool
};

// The Prometheus text (version 0.0.4) for one scrape.
std::string render_metrics(const protocol::Value& stats, const GatewayCounts& gateway);

// Ready: a worker is serving (idle or assigned), and a new instance has room: an idle worker, or
// the pool is below its bound (--max-workers) and may fork one.
bool farm_ready(const protocol::Value& stats);

}  // namespace gymfarm::frontends
