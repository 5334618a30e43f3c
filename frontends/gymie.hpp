#pragma once
// The Gymie WebSocket dialect (docs/dialects.md, "Gymie"): one text frame in, one text frame out,
// or a close with the exact code and reason Gymie-Server sends.
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "client/client.hpp"

namespace gymfarm::frontends {

struct GymieOptions {
  bool shared_instances = false;  // Gymie's global table: envs outlive the connection that made them
  bool raw_infinity = false;      // write ±inf Box bounds as Infinity instead of ±dtype max
  std::size_t max_depth = 64;     // JSON nesting limit
};

// State shared by every Gymie connection: the seed each instance gets at its first reset.
class GymieSeeds {
 public:
  void set(const std::string& instance, uint64_t seed);
  std::optional<uint64_t> take(const std::string& instance);

 private:
  std::mutex mu_;
  std::unordered_map<std::string, uint64_t> seeds_;
};

struct GymieOutcome {
  bool close = false;
  uint16_t code = 1000;
  std::string text;  // the reply frame, or the close reason
};

class GymieSession {
 public:
  GymieSession(client::Caller& farm, GymieSeeds& seeds, GymieOptions options)
      : farm_(farm), seeds_(seeds), opt_(options) {}
  GymieOutcome handle(std::string_view message);
  // The connection ended: close what it made, unless instances are shared.
  void disconnected();

 private:
  client::Caller& farm_;
  GymieSeeds& seeds_;
  GymieOptions opt_;
  std::vector<std::string> owned_;
};

// Gymie's space_info of a protocol space (`{"name": "Box", "shape": ..., "low": ..., "high": ...}`).
std::string gymie_space_info(const protocol::Value& space, bool raw_infinity);

}  // namespace gymfarm::frontends
