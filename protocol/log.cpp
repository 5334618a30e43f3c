#include "protocol/log.hpp"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace gymfarm::protocol {

namespace {

std::atomic<LogFormat> g_format{LogFormat::Text};
std::atomic<int> g_fd{STDERR_FILENO};
std::mutex g_mutex;    // one line at a time, and the status line with it
std::string g_status;  // the terminal's status line; empty: none shown

// Writes all of `s`; a full or closed stream loses the line, never blocks the caller's loop forever
// on EINTR.
void write_all(int fd, std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = ::write(fd, s.data(), s.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    s.remove_prefix(static_cast<std::size_t>(n));
  }
}

// Length of the valid UTF-8 sequence at s[i], 0 when it is not one.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t n = 0;
  unsigned min = 0;
  unsigned cp = 0;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) {
    n = 2, min = 0x80, cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, min = 0x800, cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, min = 0x10000, cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (d & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

}  // namespace

bool parse_log_format(std::string_view name, LogFormat& out) {
  if (name == "text") {
    out = LogFormat::Text;
    return true;
  }
  if (name == "json") {
    out = LogFormat::Json;
    return true;
  }
  return false;
}

const char* to_string(LogLevel level) {
  switch (level) {
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warn: return "warn";
    case LogLevel::Error: return "error";
  }
  return "info";
}

std::string json_quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else if (c >= 0x80) {
      const std::size_t n = utf8_length(s, i);
      if (n == 0) {
        out += "\\ufffd";
        ++i;
        continue;
      }
      out.append(s.substr(i, n));
      i += n;
      continue;
    } else {
      out.push_back(static_cast<char>(c));
    }
    ++i;
  }
  out.push_back('"');
  return out;
}

LogField::LogField(std::string_view k, std::string_view v) : key(k), json(json_quote(v)) {}

LogField::LogField(std::string_view k, double v) : key(k) {
  if (!std::isfinite(v)) {
    json = "null";
    return;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  json = buf;
}

void set_log_format(LogFormat format) { g_format.store(format); }
LogFormat log_format() { return g_format.load(); }
void set_log_fd(int fd) { g_fd.store(fd); }
int log_fd() { return g_fd.load(); }

std::string format_log_line(LogFormat format, LogLevel level, std::string_view msg, LogFields fields,
                            std::string_view text_prefix, long long now_ms) {
  if (format == LogFormat::Text) {
    std::string out(text_prefix);
    out.append(msg);
    return out;
  }
  const std::time_t secs = static_cast<std::time_t>(now_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char ts[64];
  std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03lldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, now_ms % 1000);
  std::string out = "{\"ts\":\"";
  out += ts;
  out += "\",\"level\":\"";
  out += to_string(level);
  out += "\",\"msg\":";
  out += json_quote(msg);
  for (const auto& f : fields) {
    if (f.key == "ts" || f.key == "level" || f.key == "msg") continue;  // the three keys every line has
    out += ',';
    out += json_quote(f.key);
    out += ':';
    out += f.json;
  }
  out += '}';
  return out;
}

void log_line(LogLevel level, std::string_view msg, LogFields fields, std::string_view text_prefix) {
  const long long now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  std::string line = format_log_line(log_format(), level, msg, fields, text_prefix, now_ms);
  line.push_back('\n');
  const std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_status.empty()) line = "\r\033[K" + line + g_status;
  write_all(log_fd(), line);
}

void set_status_line(std::string_view text) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  std::string out = "\r\033[K";
  out.append(text);
  if (text.empty() && g_status.empty()) return;
  g_status = std::string(text);
  write_all(log_fd(), out);
}

}  // namespace gymfarm::protocol
