#pragma once
// instance_id -> worker slot, plus tombstones: the error every later request to a dead instance gets.
#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>

#include "protocol/error.hpp"

namespace gymfarm::broker {

class RoutingTable {
 public:
  explicit RoutingTable(std::size_t max_tombstones = 10000) : max_tombstones_(max_tombstones) {}

  // Fails (returns false) when the id is already routed or was used before.
  bool add(const std::string& instance, std::size_t worker, std::string env_id);
  std::optional<std::size_t> find(const std::string& instance) const;
  const std::string* env_id(const std::string& instance) const;
  // Removes a live route (a closed env, or a failed make).
  void remove(const std::string& instance);
  // Removes a live route and remembers why the instance is gone.
  void bury(const std::string& instance, protocol::Error why);
  const protocol::Error* tombstone(const std::string& instance) const;

  std::size_t size() const { return routes_.size(); }
  const auto& routes() const { return routes_; }

 private:
  struct Route {
    std::size_t worker;
    std::string env_id;
  };
  std::unordered_map<std::string, Route> routes_;
  std::unordered_map<std::string, protocol::Error> tombstones_;
  std::deque<std::string> tombstone_order_;
  std::size_t max_tombstones_;
};

}  // namespace gymfarm::broker
