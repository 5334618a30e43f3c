#pragma once
// The farm's one log-line writer (`--log-format`): every line the broker, the gateway and the CLI
// log goes through log_line, as text (`[gymfarm] msg`, as it always was) or as one JSON object a
// line: {"ts": RFC 3339 UTC with milliseconds, "level": debug|info|warn|error, "msg": ..., fields}.
// Thread-safe: a line is written with one write(2), under a lock shared with the terminal's status
// line (set_status_line), which log lines never overwrite.
#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>

namespace gymfarm::protocol {

enum class LogFormat { Text, Json };
enum class LogLevel { Debug, Info, Warn, Error };

// "text" or "json"; false for anything else.
bool parse_log_format(std::string_view name, LogFormat& out);
const char* to_string(LogLevel level);

// One key and its value, rendered as JSON when the field is made.
struct LogField {
  LogField(std::string_view k, std::string_view v);
  LogField(std::string_view k, const char* v) : LogField(k, std::string_view(v ? v : "")) {}
  LogField(std::string_view k, const std::string& v) : LogField(k, std::string_view(v)) {}
  LogField(std::string_view k, double v);
  LogField(std::string_view k, bool v) : key(k), json(v ? "true" : "false") {}
  template <class I, std::enable_if_t<std::is_integral_v<I> && !std::is_same_v<I, bool>, int> = 0>
  LogField(std::string_view k, I v) : key(k), json(std::to_string(v)) {}

  std::string key;
  std::string json;
};

using LogFields = std::initializer_list<LogField>;
constexpr std::string_view kLogPrefix = "[gymfarm] ";

// Process-wide settings: set them at start-up, before threads start (they are atomics all the same).
void set_log_format(LogFormat format);
LogFormat log_format();
// Where lines go (default 2, stderr). The fd is not owned.
void set_log_fd(int fd);
int log_fd();

// Writes one line. Text: `text_prefix` + msg (fields are not repeated: the message says it).
// Json: the object, with msg as given (no prefix) and the fields after it.
void log_line(LogLevel level, std::string_view msg, LogFields fields = {}, std::string_view text_prefix = kLogPrefix);
inline void log_info(std::string_view msg, LogFields fields = {}) { log_line(LogLevel::Info, msg, fields); }
inline void log_warn(std::string_view msg, LogFields fields = {}) { log_line(LogLevel::Warn, msg, fields); }
inline void log_error(std::string_view msg, LogFields fields = {}) { log_line(LogLevel::Error, msg, fields); }

// The line log_line would write (without its newline); `ts` in JSON is `now_ms` since the epoch.
std::string format_log_line(LogFormat format, LogLevel level, std::string_view msg, LogFields fields,
                            std::string_view text_prefix, long long now_ms);

// `s` as a JSON string literal, quotes included; bytes that are not UTF-8 become U+FFFD.
std::string json_quote(std::string_view s);

// A line on a terminal that is redrawn in place (`\r`): progress. Log lines written while it shows
// clear it, print, and draw it again below. An empty text removes it. Only for a terminal.
void set_status_line(std::string_view text);

}  // namespace gymfarm::protocol
