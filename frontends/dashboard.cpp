#include "frontends/dashboard.hpp"

#include "frontends/dashboard_page.hpp"  // generated from dashboard.html (frontends/CMakeLists.txt)
#include "frontends/pyjson.hpp"
#include "protocol/token.hpp"

namespace gymfarm::frontends {

using protocol::Value;

namespace {

constexpr std::size_t kMaxInstanceId = 64;
constexpr auto kStale = std::chrono::seconds(10);  // cached frames older than this are dropped

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string_view dashboard_page() { return kDashboardHtml; }

std::string dashboard_set_cookie(std::string_view token) {
  return std::string(kDashboardCookie) + "=" + protocol::to_hex(token) + "; Path=/dashboard; HttpOnly; SameSite=Strict";
}

std::string dashboard_cookie_token(std::string_view header) {
  while (!header.empty()) {
    const auto semi = header.find(';');
    const std::string_view part = trim(header.substr(0, semi));
    const auto eq = part.find('=');
    if (eq != std::string_view::npos && trim(part.substr(0, eq)) == kDashboardCookie) {
      auto token = protocol::from_hex(trim(part.substr(eq + 1)));
      return token ? *token : std::string();
    }
    if (semi == std::string_view::npos) break;
    header.remove_prefix(semi + 1);
  }
  return {};
}

bool has_query_token(std::string_view target) {
  const auto q = target.find('?');
  if (q == std::string_view::npos) return false;
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    const auto amp = query.find('&');
    if (query.substr(0, amp).rfind("token=", 0) == 0) return true;
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return false;
}

namespace {

std::optional<std::string> instance_after(std::string_view prefix, std::string_view path) {
  if (path.rfind(prefix, 0) != 0) return std::nullopt;
  const std::string_view id = path.substr(prefix.size());
  if (id.empty() || id.size() > kMaxInstanceId) return std::nullopt;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return std::nullopt;
  }
  return std::string(id);
}

}  // namespace

std::optional<std::string> dashboard_frame_instance(std::string_view path) {
  return instance_after("/dashboard/frames/", path);
}

std::optional<std::string> dashboard_stream_instance(std::string_view path) {
  return instance_after("/dashboard/stream/", path);
}

std::string dashboard_stream_head() {
  std::string out = "HTTP/1.1 200 OK\r\nServer: gymfarm\r\nContent-Type: multipart/x-mixed-replace; boundary=";
  out += kStreamBoundary;
  out +=
      "\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"
      "Connection: close\r\n\r\n";
  return out;
}

std::string dashboard_stream_part(std::string_view png, bool first) {
  const std::string delimiter = "\r\n--" + std::string(kStreamBoundary);
  if (png.find(delimiter) != std::string_view::npos) return {};
  std::string out;
  out.reserve(png.size() + 128);
  if (first) {
    out += "--";
    out += kStreamBoundary;
  }
  out += "\r\nContent-Type: image/png\r\nContent-Length: ";
  out += std::to_string(png.size());
  out += "\r\n\r\n";
  out += png;
  out += delimiter;
  return out;
}

std::string dashboard_stream_end() { return "--\r\n"; }

std::string dashboard_stats_json(const Value& stats, const std::vector<InstanceRow>& rows,
                                 const std::vector<std::pair<std::string, std::size_t>>& connections,
                                 std::size_t streams) {
  Json instances = Json::array();
  for (const InstanceRow& r : rows) {
    Json e = Json::object();
    e["instance"] = r.instance;
    e["env_id"] = r.env_id;
    e["worker"] = r.worker >= 0 ? Json(r.worker) : Json(nullptr);
    e["dialect"] = r.dialect;
    e["owner"] = r.owner;
    e["viewable"] = r.viewable;
    instances.push_back(std::move(e));
  }
  Json conns = Json::object();
  for (const auto& [frontend, n] : connections) conns[frontend] = n;
  std::string out = "{\"stats\":";
  out += to_json(stats, JsonStyle{",", ":", true, false});
  out += ",\"instances\":";
  out += instances.dump();
  out += ",\"connections\":";
  out += conns.dump();
  out += ",\"streams\":";
  out += std::to_string(streams);
  out += "}\n";
  return out;
}

FrameCache::Frame FrameCache::get(const std::string& instance, Clock::time_point now,
                                  const std::function<Frame()>& render) {
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(instance);
    if (it != entries_.end()) {
      Entry& e = it->second;
      const bool have = e.frame.status == 200 && !e.frame.body.empty();
      if (have && (e.running || now - e.at < interval_)) return e.frame;
      if (!e.running) e.running = true;
    } else {
      if (entries_.size() >= capacity_) {
        for (auto i = entries_.begin(); i != entries_.end();) {
          i = (!i->second.running && now - i->second.at > kStale) ? entries_.erase(i) : std::next(i);
        }
      }
      if (entries_.size() < capacity_) entries_[instance].running = true;
    }
    ++renders_;
  }
  Frame f = render();
  if (f.status == 200) f.rendered = now;
  std::lock_guard lock(mu_);
  auto it = entries_.find(instance);
  if (it != entries_.end()) {
    it->second.running = false;
    if (f.status == 200) {
      it->second.frame = f;
      it->second.at = now;
    } else if (it->second.frame.body.empty() || it->second.frame.status != 200) {
      entries_.erase(it);  // never rendered: nothing worth keeping
    }
  }
  return f;
}

std::size_t FrameCache::renders() const {
  std::lock_guard lock(mu_);
  return renders_;
}

}  // namespace gymfarm::frontends
