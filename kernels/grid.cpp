#include "kernels/grid.h"

#include "kernels/defaults.h"

#include <algorithm>

namespace timbre::kernels {

long long max_grid_threads() { return defaults().grid_threads; }

namespace {
int g_row_threads_override = -1;  // set_row_threads: -1 = the table's entry
}  // namespace

int row_threads() {
  return g_row_threads_override >= 0 ? g_row_threads_override : defaults().row_threads;
}

void set_row_threads(int threads) { g_row_threads_override = threads < 0 ? -1 : threads; }

RowLaunch row_launch(long long planes, long long rows, long long cols, int block) {
  auto ceil_div = [](long long a, long long b) { return (a + b - 1) / b; };
  RowLaunch l;
  const int per_row = row_threads();
  l.tile = per_row == 0 ? dim3(32, unsigned(block / 32)) : dim3(1, unsigned(block));
  const long long gx = std::min<long long>(
      per_row == 0 ? ceil_div(cols, 32) : std::min<long long>(per_row, std::max(1LL, cols)), 65535);
  const long long gy = std::min<long long>(ceil_div(rows, l.tile.y), 65535);
  const long long per_plane = gx * gy * l.tile.x * l.tile.y;
  const long long gz =
      std::min<long long>({planes, 65535LL, std::max(1LL, max_grid_threads() / per_plane)});
  l.grid = dim3(unsigned(gx), unsigned(gy), unsigned(gz));
  return l;
}

}  // namespace timbre::kernels
