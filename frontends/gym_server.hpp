#pragma once
// The gym-server dialect (flaviotruzzi/gym-server, a Flask app of 2016; docs/dialects.md): its REST
// API (create, reset, step, info, monitor, upload, help) and the artifacts it served as static
// files (rendered frames, monitor files, the live render.html page). Plain request in, reply out.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "client/client.hpp"
#include "frontends/rest.hpp"

namespace gymfarm::frontends {

// Frames kept per instance: past either cap the oldest numbered frame is deleted first.
inline constexpr std::size_t kGymServerMaxFrames = 1000;
inline constexpr std::size_t kGymServerMaxFrameBytes = std::size_t{64} << 20;

struct GymServerOptions {
  // Where the artifacts go: ROOT/<instance_id>/rendered/ and ROOT/<instance_id>/simulation/
  // (the CLI sets MONITOR-DIR/gym-server). Never a path a client chooses.
  std::string root;
  std::size_t max_frames = kGymServerMaxFrames;
  std::size_t max_frame_bytes = kGymServerMaxFrameBytes;
};

// One gym-server instance: what its 8-hex id stands for, and its artifacts' bookkeeping.
struct GymServerEntry {
  std::string instance;  // the broker's instance id
  std::string env_id;
  int64_t rendered = 0;                                // frames rendered so far (the last is N.png)
  std::deque<std::pair<int64_t, std::size_t>> frames;  // numbered frames on disk: number, bytes
  std::size_t frame_bytes = 0;
  MonitorState monitor;       // episode statistics between monitor/start and monitor/close
  int64_t batches = 0;        // monitor sessions written so far
  bool episode_over = false;  // a step ended the episode: steps before the next reset are not counted
};

// The gym-server instance table: 8-hex ids, as gym-server made them.
using GymServerRegistry = HexIdTable<GymServerEntry>;

class GymServerSession {
 public:
  GymServerSession(client::Caller& farm, GymServerRegistry& registry, GymServerOptions options)
      : farm_(farm), reg_(registry), opt_(std::move(options)) {}
  // The API: /v1/...
  HttpReply handle(const HttpRequest& req);

 private:
  client::Caller& farm_;
  GymServerRegistry& reg_;
  GymServerOptions opt_;
};

// The artifacts (GET and HEAD): /render.html, /<id>/rendered/[N.png|latest.png], /<id>/simulation/[file],
// and directory listings of those; nothing outside GymServerOptions::root, no symlinks followed.
HttpReply gym_server_file(const GymServerOptions& options, const HttpRequest& req);

// Whether `id` has the shape of a gym-server instance id (8 lowercase hex characters).
bool is_gym_server_id(const std::string& id);

}  // namespace gymfarm::frontends
