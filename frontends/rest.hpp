#pragma once
// The REST dialects (docs/dialects.md): gym-http-api (openai, archived 2018) and its Gymnasium
// fork (unrenormalizable/gymnasium-http-api). Plain request in, reply out; no sockets here.
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "client/client.hpp"
#include "frontends/hex_id_table.hpp"

namespace gymfarm::frontends {

enum class RestDialect { GymHttpApi, GymnasiumHttpApi };

struct HttpRequest {
  std::string method;
  std::string target;  // path and query
  std::string body;
  std::string content_type;
  // True once the client has gone (the connection closed): long work stops. Empty: never.
  std::function<bool()> client_gone = {};
};

struct HttpReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool shutdown = false;  // the farm should stop once this reply is sent
};

// POST /v1/envs/ID/episodes/ (docs/dialects.md): `count` above kMaxEpisodes is a 400; the episodes
// stop, cut short, after kMaxEpisodeSteps steps or kMaxEpisodeBytes of encoded observations in all.
inline constexpr int64_t kMaxEpisodes = 100;
inline constexpr int64_t kMaxEpisodeSteps = 100000;
inline constexpr std::size_t kMaxEpisodeBytes = std::size_t{64} << 20;

struct RestOptions {
  std::string monitor_dir;  // operator-chosen root for monitor output
  bool allow_shutdown = false;
};

// Episode statistics recorded between monitor/start and monitor/close.
struct MonitorState {
  bool active = false;
  std::string directory;  // resolved inside RestOptions::monitor_dir
  double episode_reward = 0.0;
  int64_t episode_length = 0;
  std::vector<double> rewards;
  std::vector<int64_t> lengths;
  std::vector<double> timestamps;
  double started = 0.0;
};

// One instance of the REST dialects: what the 8-hex id stands for.
struct RestEntry {
  std::string instance;  // the broker's instance id
  std::string env_id;    // as the client asked for it (legacy ids kept)
  std::string spec_id;
  std::optional<uint64_t> seed;  // applied at the first reset (gym-http-api's make seed)
  MonitorState monitor;
};

// The REST instance table, shared by every REST connection of both dialects.
class RestRegistry : public HexIdTable<RestEntry> {
 public:
  void set_seed_used(const std::string& id);
  std::vector<std::pair<std::string, std::string>> list();  // id, env id
};

// A JSON reply as the REST-style dialects' Flask servers wrote it (separators, a final newline).
HttpReply json_reply(int status, const protocol::Value& v);

// gym Monitor's manifest lists its videos as [video, metadata] pairs: from the worker's `videos`.
protocol::Array video_pairs(const protocol::Value* videos);

class RestSession {
 public:
  RestSession(client::Caller& farm, RestRegistry& registry, RestDialect dialect, RestOptions options)
      : farm_(farm), reg_(registry), dialect_(dialect), opt_(std::move(options)) {}
  // `via`: the farm for this one request, instead of the session's.
  HttpReply handle(const HttpRequest& req, client::Caller* via = nullptr);
  // Whether the request is a step: its handling makes one farm call, the step, and changes
  // nothing before it (so it may be tried again elsewhere: the gateway).
  bool is_step(const HttpRequest& req) const;

 private:
  client::Caller& farm_;
  RestRegistry& reg_;
  RestDialect dialect_;
  RestOptions opt_;
};

// The OpenAPI 3 document of one dialect's routes (served at /openapi.json on that dialect's port).
std::string openapi_document(RestDialect dialect);

}  // namespace gymfarm::frontends
