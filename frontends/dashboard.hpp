#pragma once
// The live dashboard (docs/operations.md "Dashboard"): GET /dashboard (one static page compiled
// into the binary from dashboard.html), GET /dashboard/api/stats (the broker's `stats` as JSON,
// with the instances the gateway can name) and GET /dashboard/frames/<instance> (the instance's
// rgb_array frame as a PNG). Pure functions and one small cache, so they are tested without
// sockets; the gateway does the routing and the farm calls.
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "frontends/instance_owners.hpp"
#include "protocol/value.hpp"

namespace gymfarm::frontends {

// The page, as dashboard.html is (inline script and style, nothing loaded from elsewhere).
std::string_view dashboard_page();

// The Content-Security-Policy of the page and its JSON: its own inline script and style, images
// from this origin or blob: URLs, requests to this origin only, never framed.
inline constexpr std::string_view kDashboardCsp =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

// The cookie that keeps the token for the page: its name, the Set-Cookie value (the token as hex,
// HttpOnly, SameSite=Strict, Path=/dashboard) and the token read back from a Cookie header (empty
// when it is absent or not hex).
inline constexpr std::string_view kDashboardCookie = "gymfarm_dashboard";
std::string dashboard_set_cookie(std::string_view token);
std::string dashboard_cookie_token(std::string_view cookie_header);

// Whether a request target carries `token=` in its query.
bool has_query_token(std::string_view target);

// /dashboard/frames/<instance> and /dashboard/stream/<instance>: the instance id (1-64 of
// [A-Za-z0-9_-]) or nullopt.
std::optional<std::string> dashboard_frame_instance(std::string_view path);
std::optional<std::string> dashboard_stream_instance(std::string_view path);

// /dashboard/stream/<instance> is multipart/x-mixed-replace, one image/png part per frame. Each
// part is written with the delimiter that ends it, so a viewer shows a frame as soon as it has
// come (not when the next one starts): the head (status line and headers), then the first part
// (which opens with the dash-boundary), the later ones, and the close delimiter's tail. A PNG that
// holds the delimiter itself gets an empty part (the caller skips that frame).
inline constexpr std::string_view kStreamBoundary = "gymfarm-frame";
std::string dashboard_stream_head();
std::string dashboard_stream_part(std::string_view png, bool first);
std::string dashboard_stream_end();

// The JSON /dashboard/api/stats answers: {stats: <the broker's stats>, instances: [{instance,
// env_id, worker, dialect, owner, viewable}] (instance_owners.hpp), connections: {frontend: n},
// streams: n} (streams: the /dashboard/stream/ viewers now).
std::string dashboard_stats_json(const protocol::Value& stats, const std::vector<InstanceRow>& rows,
                                 const std::vector<std::pair<std::string, std::size_t>>& connections,
                                 std::size_t streams);

// One frame per instance per interval, whatever the number of viewers: a request within the
// interval of the last render (or while one is running) gets that frame again. So an env watched
// by anyone pays at most one render per interval; one no one watches pays nothing.
class FrameCache {
 public:
  using Clock = std::chrono::steady_clock;
  struct Frame {
    int status = 200;              // 200 with a PNG; otherwise the HTTP status of the failure
    std::string body;              // the PNG, or the JSON message
    Clock::time_point rendered{};  // when the env rendered it (a PNG's)
  };
  explicit FrameCache(std::chrono::milliseconds interval = std::chrono::milliseconds(200), std::size_t capacity = 1024)
      : interval_(interval), capacity_(capacity) {}

  // The frame of `instance` at `now`: the cached one when fresh, otherwise render() (called without
  // the lock held) and cached. Failures are not cached.
  Frame get(const std::string& instance, Clock::time_point now, const std::function<Frame()>& render);
  std::size_t renders() const;  // render() calls so far
  std::chrono::milliseconds interval() const { return interval_; }

 private:
  struct Entry {
    Clock::time_point at{};
    bool running = false;
    Frame frame;
  };
  const std::chrono::milliseconds interval_;
  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
  std::size_t renders_ = 0;
};

}  // namespace gymfarm::frontends
