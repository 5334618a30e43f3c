#pragma once
// The instance table of a REST-style dialect: 8-hex ids (as gym-http-api and gym-server made
// them) from the OS CSPRNG, mapped to the dialect's own entry, safe for the gateway's threads.
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "protocol/token.hpp"

namespace gymfarm::frontends {

template <class E>
class HexIdTable {
 public:
  using Entry = E;

  std::string add(Entry e) {
    std::lock_guard lock(mu_);
    std::string id;
    do {
      id = protocol::random_hex(4);
    } while (entries_.count(id));
    entries_.emplace(id, std::move(e));
    return id;
  }
  std::optional<Entry> get(const std::string& id) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return std::nullopt;
    return it->second;
  }
  bool remove(const std::string& id) {
    std::lock_guard lock(mu_);
    return entries_.erase(id) > 0;
  }
  // Runs f on the entry under the lock; false when the id is unknown.
  template <class F>
  bool update(const std::string& id, F&& f) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return false;
    f(it->second);
    return true;
  }
  // Runs f(id, entry) on every entry, in id order, under the lock.
  template <class F>
  void for_each(F&& f) {
    std::lock_guard lock(mu_);
    for (const auto& [id, e] : entries_) f(id, e);
  }

 private:
  std::mutex mu_;
  std::map<std::string, Entry> entries_;
};

}  // namespace gymfarm::frontends
