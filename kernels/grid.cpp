#include "kernels/grid.h"

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

}  // namespace timbre::kernels
