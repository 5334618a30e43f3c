#include "broker/admission.hpp"

#include <algorithm>
#include <utility>

#include "broker/sessions.hpp"

namespace gymfarm::broker {

bool Admission::begin(const std::string& client, std::size_t& counted) {
  counted = 0;
  if (!limits_.max_inflight_per_client) return true;
  auto& n = inflight_[client];
  if (n >= limits_.max_inflight_per_client) return false;
  ++n;
  counted = 1;
  return true;
}

void Admission::settle(const std::string& client, std::size_t counted) {
  if (!counted) return;
  if (auto it = inflight_.find(client); it != inflight_.end()) {
    it->second -= std::min(it->second, counted);
    if (it->second == 0) inflight_.erase(it);
  }
}

std::size_t Admission::in_flight(const std::string& client) const {
  auto it = inflight_.find(client);
  return it == inflight_.end() ? 0 : it->second;
}

bool Admission::may_make(const std::string& client) const {
  return !limits_.max_instances_per_client || holds(client) < limits_.max_instances_per_client;
}

std::size_t Admission::holds(const std::string& client) const {
  auto it = held_.find(client);
  return it == held_.end() ? 0 : it->second;
}

void Admission::made(const std::string& instance, const std::string& client, bool shared, SessionLabel session) {
  owners_[instance] = Owner{client, shared, std::move(session)};
  ++held_[client];
}

void Admission::forget(const std::string& instance) {
  auto it = owners_.find(instance);
  if (it == owners_.end()) return;
  if (auto h = held_.find(it->second.client); h != held_.end() && --h->second == 0) held_.erase(h);
  owners_.erase(it);
}

const Admission::Owner* Admission::owner(const std::string& instance) const {
  auto it = owners_.find(instance);
  return it == owners_.end() ? nullptr : &it->second;
}

std::vector<std::string> Admission::instances_of(const std::string& client) const {
  std::vector<std::string> out;
  for (const auto& [instance, owner] : owners_) {
    if (owner.client == client) out.push_back(instance);
  }
  return out;
}

bool Admission::may_use(const std::string& instance, const std::string& client) const {
  auto it = owners_.find(instance);
  return it == owners_.end() || it->second.shared || principal(it->second.client) == principal(client);
}

}  // namespace gymfarm::broker
