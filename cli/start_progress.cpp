#include "cli/start_progress.hpp"

#include <unistd.h>

#include <cstdio>
#include <string>

#include "protocol/log.hpp"

namespace gymfarm::cli {

namespace {
// A terminal line may be redrawn this often; more would only flicker.
constexpr auto kTerminalInterval = std::chrono::milliseconds(100);

std::string count_text(std::size_t ready, std::size_t total) {
  return "workers " + std::to_string(ready) + "/" + std::to_string(total) + " ready";
}
}  // namespace

StartProgress::StartProgress(bool terminal, Clock::time_point started, Clock::duration line_interval)
    : terminal_(terminal), started_(started), interval_(terminal ? kTerminalInterval : line_interval) {}

bool StartProgress::log_is_terminal() {
  return protocol::log_format() == protocol::LogFormat::Text && ::isatty(protocol::log_fd()) == 1;
}

void StartProgress::update(std::size_t ready, std::size_t total, Clock::time_point now) {
  if (finished_ || (shown_any_ && (ready == shown_ready_ || now - shown_at_ < interval_))) return;
  show(ready, total, now);
}

void StartProgress::show(std::size_t ready, std::size_t total, Clock::time_point now) {
  shown_any_ = true;
  shown_ready_ = ready;
  shown_at_ = now;
  if (terminal_) {
    protocol::set_status_line(std::string(protocol::kLogPrefix) + count_text(ready, total));
  } else {
    protocol::log_info(count_text(ready, total), {{"event", "start_progress"}, {"ready", ready}, {"workers", total}});
  }
}

void StartProgress::finish(std::size_t total, Clock::time_point now) {
  if (finished_) return;
  finished_ = true;
  const double s = std::chrono::duration<double>(now - started_).count();
  char took[32];
  std::snprintf(took, sizeof took, "%.1f", s);
  if (terminal_) protocol::set_status_line("");
  protocol::log_info(count_text(total, total) + " in " + took + " s",
                     {{"event", "workers_ready"}, {"ready", total}, {"workers", total}, {"seconds", s}});
}

void StartProgress::abandon() {
  if (finished_) return;
  finished_ = true;
  if (terminal_) protocol::set_status_line("");
}

}  // namespace gymfarm::cli
