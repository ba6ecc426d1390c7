#include "kernels/grid.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace timbre::kernels {

long long max_grid_threads() {
  static const long long cap = [] {
    if (const char* env = std::getenv("TIMBRE_MAX_GRID_THREADS"); env && *env) {
      char* end = nullptr;
      const long long v = std::strtoll(env, &end, 10);
      if (*end != '\0' || v < 32)
        throw std::invalid_argument(std::string("TIMBRE_MAX_GRID_THREADS must be an integer >= 32, "
                                                "not '") + env + "'");
      return v;
    }
#if TIMBRE_BACKEND_SIM
    return 1LL << 31;
#else
    return 1LL << 19;
#endif
  }();
  return cap;
}

namespace {
// 0: the backend's choice. TIMBRE_COLUMNS_PER_THREAD sets it for a whole
// process (the test suite's GPU-shape re-runs use 1).
int g_columns_per_thread = [] {
  const char* env = std::getenv("TIMBRE_COLUMNS_PER_THREAD");
  return env && *env ? std::max(0, std::atoi(env)) : 0;
}();
}  // namespace

int columns_per_thread(long long cols) {
  if (cols < 1) return 1;
  if (g_columns_per_thread > 0) return int(g_columns_per_thread < cols ? g_columns_per_thread : cols);
#if TIMBRE_BACKEND_SIM
  return int(cols);
#else
  return 1;
#endif
}

void set_columns_per_thread(int columns) { g_columns_per_thread = columns < 0 ? 0 : columns; }

RowLaunch row_launch(long long planes, long long rows, long long cols, int block) {
  auto ceil_div = [](long long a, long long b) { return (a + b - 1) / b; };
  RowLaunch l;
  l.span = columns_per_thread(cols);
  l.tile = l.span == 1 ? dim3(32, unsigned(block / 32)) : dim3(1, unsigned(block));
  const long long gx = std::min<long long>(ceil_div(ceil_div(cols, l.span), l.tile.x), 65535);
  const long long gy = std::min<long long>(ceil_div(rows, l.tile.y), 65535);
  const long long per_plane = gx * gy * l.tile.x * l.tile.y;
  const long long gz =
      std::min<long long>({planes, 65535LL, std::max(1LL, max_grid_threads() / per_plane)});
  l.grid = dim3(unsigned(gx), unsigned(gy), unsigned(gz));
  return l;
}

}  // namespace timbre::kernels
