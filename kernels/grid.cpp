#include "kernels/grid.h"

#include "kernels/defaults.h"

#include <algorithm>

namespace timbre::kernels {

long long max_grid_threads() { return defaults().grid_threads; }

namespace {
int g_columns_override = 0;  // set_columns_per_thread: 0 = the table's entry
}  // namespace

int columns_per_thread(long long cols) {
  if (cols < 1) return 1;
  const int c = g_columns_override > 0 ? g_columns_override : defaults().row_columns;
  if (c == 0 || c >= cols) return int(cols);
  return c;
}

void set_columns_per_thread(int columns) { g_columns_override = columns < 0 ? 0 : columns; }

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
