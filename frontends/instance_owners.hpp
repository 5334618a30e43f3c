#pragma once
// Which dialect made each instance the workers host, and who owns it: the dashboard's instance
// table and /metrics' gymfarm_instances{dialect}. The broker's `stats` says which session made each
// instance (workers' `owners`, docs/protocol.md); for the gateway's own clients, which are one
// session, the gateway's tables say which dialect and which connection.
#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "protocol/value.hpp"

namespace gymfarm::frontends {

// The dialects an instance can come from, as /metrics labels them.
inline constexpr const char* kInstanceDialects[] = {"native", "gymie", "rest", "gym_server"};

// An instance in one of the gateway's tables: its dialect (a kInstanceDialects name) and owner.
struct GatewayInstance {
  std::string dialect;
  std::string owner;
};

struct InstanceRow {
  std::string instance;
  std::string env_id;
  double worker = -1;  // the worker slot's index (-1: not given)
  std::string dialect;
  std::string owner;
  // The gateway may render it: its own (any dialect's) or made shared.
  bool viewable = false;
};

// Every instance the workers host, in the order of `stats.workers`.
std::vector<InstanceRow> instance_rows(const protocol::Value& stats,
                                       const std::map<std::string, GatewayInstance>& gateway);

// The number of rows of each dialect (every name of kInstanceDialects, 0 when none).
std::map<std::string, std::size_t> instances_by_dialect(const std::vector<InstanceRow>& rows);

}  // namespace gymfarm::frontends
