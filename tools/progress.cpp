#include "tools/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace timbre::tools {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long long s = std::llround(seconds);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  return buf;
}

bool Progress::stderr_is_terminal() { return isatty(STDERR_FILENO) == 1; }

Progress::Progress(std::string label, long long total, std::string unit, double log_seconds)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      log_seconds_(log_seconds),
      tty_(stderr_is_terminal()),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

Progress::~Progress() { finish(); }

double Progress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(long long done, const std::string& status) {
  done_ = done;
  status_ = status;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  // A terminal redraws ten times a second at most; a log gets a line every
  // log_seconds.
  if (since >= (tty_ ? 0.1 : log_seconds_)) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish(const std::string& status) {
  if (finished_) return;
  finished_ = true;
  if (!status.empty()) status_ = status;
  draw(true);
}

void Progress::draw(bool final) {
  const double t = seconds();
  const double rate = t > 0 ? double(done_) / t : 0.0;
  std::string eta;
  if (!final && total_ > 0 && rate > 0) eta = "  eta " + format_duration(double(total_ - done_) / rate);
  std::string count = std::to_string(done_);
  if (total_ > 0) count += "/" + std::to_string(total_);
  char rate_s[48];
  std::snprintf(rate_s, sizeof rate_s, "%.1f/s", rate);
  if (tty_) {
    std::string bar;
    if (total_ > 0) {
      const int width = 24;
      const int fill = int(std::min<long long>(width, done_ * width / std::max(1LL, total_)));
      bar = "[" + std::string(fill, '#') + std::string(width - fill, '.') + "]  ";
    }
    std::fprintf(stderr, "\r\033[K%s  %s%s %s  %s%s%s%s", label_.c_str(), bar.c_str(),
                 count.c_str(), unit_.c_str(), rate_s, eta.c_str(),
                 status_.empty() ? "" : "  ", status_.c_str());
    if (final) std::fputc('\n', stderr);
  } else {
    std::string pct;
    if (total_ > 0) pct = " (" + std::to_string(done_ * 100 / std::max(1LL, total_)) + "%)";
    std::fprintf(stderr, "%s: %s %s%s, %s%s%s%s\n", label_.c_str(), count.c_str(), unit_.c_str(),
                 pct.c_str(), rate_s, eta.c_str(), status_.empty() ? "" : ", ", status_.c_str());
  }
  std::fflush(stderr);
}

}  // namespace timbre::tools
