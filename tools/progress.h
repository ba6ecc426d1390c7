// progress.h: progress on long work, for people and for logs.
//
// On a terminal (stderr is a TTY) a bar redrawn in place:
//   extract  [#########.............]  412/1000 tracks  37.2/s  eta 0:16
// Anywhere else (CI, a pipe, a file) plain lines, at most one every
// `log_seconds` and one at the end, so logs stay short:
//   extract: 412/1000 tracks (41%), 37.2/s, eta 0:16
#pragma once

#include <chrono>
#include <string>

namespace timbre::tools {

class Progress {
 public:
  // total: units of work expected (0 when unknown); unit: "tracks", "steps".
  Progress(std::string label, long long total, std::string unit, double log_seconds = 10.0);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Sets the units done so far (and a short status text after the numbers).
  void update(long long done, const std::string& status = "");
  // Draws the last state and ends the line. Called by the destructor too.
  void finish(const std::string& status = "");
  double seconds() const;
  static bool stderr_is_terminal();

 private:
  void draw(bool final);
  std::string label_, unit_, status_;
  long long total_, done_ = 0;
  double log_seconds_;
  bool tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1:02:03", "4:05" or "0:07".
std::string format_duration(double seconds);

}  // namespace timbre::tools
