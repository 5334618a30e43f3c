#include "broker/routing_table.hpp"

namespace gymfarm::broker {

bool RoutingTable::add(const std::string& instance, std::size_t worker, std::string env_id) {
  if (routes_.count(instance) || tombstones_.count(instance)) return false;
  routes_.emplace(instance, Route{worker, std::move(env_id)});
  return true;
}

std::optional<std::size_t> RoutingTable::find(const std::string& instance) const {
  auto it = routes_.find(instance);
  if (it == routes_.end()) return std::nullopt;
  return it->second.worker;
}

const std::string* RoutingTable::env_id(const std::string& instance) const {
  auto it = routes_.find(instance);
  return it == routes_.end() ? nullptr : &it->second.env_id;
}

void RoutingTable::remove(const std::string& instance) { routes_.erase(instance); }

void RoutingTable::bury(const std::string& instance, protocol::Error why) {
  routes_.erase(instance);
  if (tombstones_.insert_or_assign(instance, std::move(why)).second) tombstone_order_.push_back(instance);
  while (tombstone_order_.size() > max_tombstones_) {
    tombstones_.erase(tombstone_order_.front());
    tombstone_order_.pop_front();
  }
}

const protocol::Error* RoutingTable::tombstone(const std::string& instance) const {
  auto it = tombstones_.find(instance);
  return it == tombstones_.end() ? nullptr : &it->second;
}

}  // namespace gymfarm::broker
