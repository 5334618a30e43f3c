#pragma once
// The Gymie WebSocket dialect (docs/dialects.md, "Gymie"): one text frame in, one text frame out,
// or a close with the exact code and reason Gymie-Server sends.
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "client/client.hpp"

namespace gymfarm::frontends {

struct GymieOptions {
  bool shared_instances = false;  // Gymie's global table: envs outlive the connection that made them
  bool raw_infinity = false;      // write ±inf Box bounds as Infinity instead of ±dtype max
  std::size_t max_depth = 64;     // JSON nesting limit
};

// State shared by every Gymie connection: the instances Gymie connections made, who made each (the
// dashboard's owner and /metrics' dialect) and the seed each gets at its first reset.
class GymieInstances {
 public:
  void made(const std::string& instance, std::string owner, std::optional<uint64_t> seed);
  std::optional<uint64_t> take_seed(const std::string& instance);
  void closed(const std::string& instance);
  // instance -> the connection that made it
  std::map<std::string, std::string> owners() const;

 private:
  struct Entry {
    std::string owner;
    std::optional<uint64_t> seed;
  };
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
};

struct GymieOutcome {
  bool close = false;
  uint16_t code = 1000;
  std::string text;  // the reply frame, or the close reason
};

class GymieSession {
 public:
  // `owner`: how the dashboard names this connection (its number and the peer's address).
  GymieSession(client::Caller& farm, GymieInstances& instances, GymieOptions options, std::string owner)
      : farm_(farm), instances_(instances), opt_(options), owner_(std::move(owner)) {}
  // `via`: the farm for this one message, instead of the session's.
  GymieOutcome handle(std::string_view message, client::Caller* via = nullptr);
  // Whether the message is a well-formed step request: its handling makes one farm call, the
  // step, and changes nothing before it (so it may be tried again elsewhere: the gateway).
  static bool is_step(std::string_view message, std::size_t max_depth);
  // The connection ended: close what it made, unless instances are shared.
  void disconnected();

 private:
  client::Caller& farm_;
  GymieInstances& instances_;
  GymieOptions opt_;
  std::string owner_;
  std::vector<std::string> owned_;
};

// Gymie's space_info of a protocol space (`{"name": "Box", "shape": ..., "low": ..., "high": ...}`).
std::string gymie_space_info(const protocol::Value& space, bool raw_infinity);

}  // namespace gymfarm::frontends
