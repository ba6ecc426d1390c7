// command.h: running the timbre command from the tools' tests.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

namespace timbre::testing {

// Runs a shell command, returns (exit code, stdout + stderr).
inline std::pair<int, std::string> sh(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, ""};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), out};
}

// The timbre command: $TIMBRE_EXE when set (a build prepared elsewhere, see
// scripts/gpu_check.sh), else the one built beside the test (TIMBRE_EXE).
inline std::string timbre_exe() {
  const char* env = std::getenv("TIMBRE_EXE");
  return std::string(env && *env ? env : TIMBRE_EXE);
}

}  // namespace timbre::testing
