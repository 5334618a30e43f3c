#pragma once
// The gateway's connection book-keeping (docs/operations.md "Gateway limits"): how many connections
// are open in total and from each remote address, and whether one more may be admitted. Pure logic,
// thread-safe; the listener asks before it serves an accepted socket and releases when it closes.
#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>

namespace gymfarm::frontends {

struct ConnectionLimitOptions {
  std::size_t max_total = 10000;    // every open connection, both ports, HTTP and WebSocket (0 = none)
  std::size_t max_per_client = 64;  // from one remote address (0 = none)
};

enum class Admission { Admitted, TooManyFromClient, TooManyInTotal };

class ConnectionLimits {
 public:
  explicit ConnectionLimits(ConnectionLimitOptions options = {}) : opt_(options) {}

  // Counts the connection when admitted; a refused one is not counted (and needs no release).
  Admission admit(const std::string& client);
  // One admitted connection from `client` closed. Releasing more than was admitted is ignored.
  void release(const std::string& client);

  std::size_t total() const;
  std::size_t from(const std::string& client) const;
  std::size_t clients() const;  // remote addresses with at least one connection
  const ConnectionLimitOptions& options() const { return opt_; }

 private:
  ConnectionLimitOptions opt_;
  mutable std::mutex mu_;
  std::size_t total_ = 0;
  std::unordered_map<std::string, std::size_t> per_client_;
};

}  // namespace gymfarm::frontends
