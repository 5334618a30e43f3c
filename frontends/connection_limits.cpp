#include "frontends/connection_limits.hpp"

namespace gymfarm::frontends {

Admission ConnectionLimits::admit(const std::string& client) {
  std::lock_guard lock(mu_);
  if (opt_.max_total && total_ >= opt_.max_total) return Admission::TooManyInTotal;
  auto it = per_client_.find(client);
  const std::size_t n = it == per_client_.end() ? 0 : it->second;
  if (opt_.max_per_client && n >= opt_.max_per_client) return Admission::TooManyFromClient;
  if (it == per_client_.end()) it = per_client_.emplace(client, 0).first;
  ++it->second;
  ++total_;
  return Admission::Admitted;
}

void ConnectionLimits::release(const std::string& client) {
  std::lock_guard lock(mu_);
  auto it = per_client_.find(client);
  if (it == per_client_.end()) return;
  if (--it->second == 0) per_client_.erase(it);
  if (total_ > 0) --total_;
}

std::size_t ConnectionLimits::total() const {
  std::lock_guard lock(mu_);
  return total_;
}

std::size_t ConnectionLimits::from(const std::string& client) const {
  std::lock_guard lock(mu_);
  auto it = per_client_.find(client);
  return it == per_client_.end() ? 0 : it->second;
}

std::size_t ConnectionLimits::clients() const {
  std::lock_guard lock(mu_);
  return per_client_.size();
}

}  // namespace gymfarm::frontends
