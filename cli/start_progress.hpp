#pragma once
// What `gymfarm start` shows while the warm pool comes up: on a terminal one line redrawn in place
// (`workers 7/16 ready`), otherwise a log line when the count changed, at most one a second, and
// always the last: `workers 16/16 ready in 0.4 s`.
#include <chrono>
#include <cstddef>

namespace gymfarm::cli {

class StartProgress {
 public:
  using Clock = std::chrono::steady_clock;
  // `terminal`: redraw in place (text logs to a terminal); else log lines at most every
  // `line_interval`.
  StartProgress(bool terminal, Clock::time_point started, Clock::duration line_interval = std::chrono::seconds(1));
  // Called often (every turn of the broker's loop); shows what changed when it may.
  void update(std::size_t ready, std::size_t total, Clock::time_point now);
  // Every worker is ready: the last line.
  void finish(std::size_t total, Clock::time_point now);
  // The pool did not come up: the terminal line goes, the log says why.
  void abandon();

  // True when the log goes to a terminal as text: progress is then a line redrawn in place.
  static bool log_is_terminal();

 private:
  void show(std::size_t ready, std::size_t total, Clock::time_point now);

  bool terminal_;
  Clock::time_point started_;
  Clock::duration interval_;
  bool shown_any_ = false;
  bool finished_ = false;
  std::size_t shown_ready_ = 0;
  Clock::time_point shown_at_{};
};

}  // namespace gymfarm::cli
