#include "broker/sessions.hpp"

namespace gymfarm::broker {

std::string client_key(ClientPath path, std::string_view address, std::string_view connection) {
  std::string key;
  key.reserve(1 + kConnectionIdSize + address.size());
  key += static_cast<char>(path);
  if (path == ClientPath::Tcp) {
    std::string id(connection.substr(0, kConnectionIdSize));
    id.resize(kConnectionIdSize, '-');  // a message without a connection id gets the one no connection has
    key += id;
  }
  key += address;
  return key;
}

std::optional<ClientAddress> parse_client_key(std::string_view key) {
  if (key.empty()) return std::nullopt;
  switch (static_cast<ClientPath>(key[0])) {
    case ClientPath::Tcp:
      if (key.size() < 1 + kConnectionIdSize) return std::nullopt;
      return ClientAddress{ClientPath::Tcp, key.substr(1 + kConnectionIdSize)};
    case ClientPath::Inproc: return ClientAddress{ClientPath::Inproc, key.substr(1)};
    case ClientPath::Local: return ClientAddress{ClientPath::Local, key.substr(1)};
  }
  return std::nullopt;
}

std::string_view principal(std::string_view key) {
  if (!key.empty() && key[0] == static_cast<char>(ClientPath::Inproc)) return key.substr(0, 1);
  return key;
}

std::string session_name(std::string_view name) {
  std::string out(name.substr(0, kMaxSessionName));
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return out;
}

std::string_view client_via(std::string_view key) {
  switch (key.empty() ? '\0' : key[0]) {
    case static_cast<char>(ClientPath::Tcp): return "tcp";
    case static_cast<char>(ClientPath::Local): return "local";
    case static_cast<char>(ClientPath::Inproc): return "gateway";
    default: return "unknown";
  }
}

SessionTable::Open SessionTable::open(const std::string& client, bool authorized,
                                      const std::function<bool(const std::string&)>& busy, bool keep_instances,
                                      std::chrono::steady_clock::duration lease,
                                      std::chrono::steady_clock::time_point now) {
  if (auto it = index_.find(client); it != index_.end()) {
    it->second->authorized = it->second->authorized || authorized;
    it->second->keep_instances = keep_instances;
    leased_ += (lease.count() > 0) - (it->second->lease.count() > 0);
    it->second->lease = lease;
    it->second->last = now;
    order_.splice(order_.begin(), order_, it->second);
    return Open::Renewed;
  }
  if (index_.size() >= max_) {
    // The least recently active TCP session that holds nothing makes room. Sessions that hold work
    // are passed over (and moved to the front, so the next search does not scan them again).
    bool made_room = false;
    for (std::size_t scanned = 0, n = order_.size(); scanned < n && !order_.empty(); ++scanned) {
      auto last = std::prev(order_.end());
      const bool tcp = !last->key.empty() && last->key[0] == static_cast<char>(ClientPath::Tcp);
      if (tcp && !busy(last->key)) {
        leased_ -= last->lease.count() > 0;
        index_.erase(last->key);
        order_.erase(last);
        ++evicted_;
        made_room = true;
        break;
      }
      order_.splice(order_.begin(), order_, last);
    }
    if (!made_room) return Open::Full;
  }
  order_.push_front(Entry{client, authorized, keep_instances, lease, now, SessionLabel{++opened_, {}}});
  leased_ += lease.count() > 0;
  index_.emplace(client, order_.begin());
  return Open::Opened;
}

bool SessionTable::authorized(const std::string& client) const {
  auto it = index_.find(client);
  return it != index_.end() && it->second->authorized;
}

bool SessionTable::keeps_instances(const std::string& client) const {
  auto it = index_.find(client);
  return it != index_.end() && it->second->keep_instances;
}

void SessionTable::touch(const std::string& client, std::chrono::steady_clock::time_point now) {
  auto it = index_.find(client);
  if (it == index_.end()) return;
  it->second->last = now;
  if (it->second != order_.begin()) order_.splice(order_.begin(), order_, it->second);
}

std::vector<std::string> SessionTable::expired(std::chrono::steady_clock::time_point now,
                                               const std::function<bool(const std::string&)>& busy) const {
  std::vector<std::string> out;
  if (leased_ == 0) return out;
  for (const auto& e : order_) {
    if (e.lease.count() > 0 && now - e.last > e.lease && !busy(e.key)) out.push_back(e.key);
  }
  return out;
}

void SessionTable::set_name(const std::string& client, std::string_view name) {
  if (auto it = index_.find(client); it != index_.end()) it->second->label.name = session_name(name);
}

std::optional<SessionLabel> SessionTable::label(const std::string& client) const {
  auto it = index_.find(client);
  if (it == index_.end()) return std::nullopt;
  return it->second->label;
}

void SessionTable::close(const std::string& client) {
  auto it = index_.find(client);
  if (it == index_.end()) return;
  leased_ -= it->second->lease.count() > 0;
  order_.erase(it->second);
  index_.erase(it);
}

}  // namespace gymfarm::broker
