#include "tools/device.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "kernels/cuda_check.h"
#include "kernels/defaults.h"
#include "tools/train.h"
#if TIMBRE_BACKEND_SIM
#include "kernels/sim/control.h"
#endif

namespace timbre::tools {

namespace {

// CUDA's version integers (1000 major + 10 minor) as "major.minor".
[[maybe_unused]] std::string cuda_version(int v) {
  return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
}

int device_count() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaErrorNoDevice) {
    (void)cudaGetLastError();  // not sticky: clear it
    return 0;
  }
  CUDA_CHECK(e);
  return n;
}

std::string describe(int device) {
  cudaDeviceProp p;
  CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  return fmt::format("device {}: {} (compute {}.{}, {} SMs, {:.1f} GiB)", device, p.name, p.major,
                     p.minor, p.multiProcessorCount, double(p.totalGlobalMem) / (1 << 30));
}

}  // namespace

void select_device(int device) {
  const int n = device_count();
  if (device < 0 || device >= n) {
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    throw UsageError(fmt::format(
        "--device {}: {}{} (timbre info lists them)", device,
        n == 0 ? std::string("there is no device")
               : n == 1 ? std::string("there is one device, 0")
                        : fmt::format("there are {} devices, 0 to {}", n, n - 1),
        visible ? fmt::format(" with CUDA_VISIBLE_DEVICES={}", visible) : std::string()));
  }
  CUDA_CHECK(cudaSetDevice(device));
}

std::string device_summary() {
  int d = 0;
  CUDA_CHECK(cudaGetDevice(&d));
  return describe(d);
}

std::string backend_description() {
#if TIMBRE_BACKEND_SIM
  const int workers = simcuda::options().workers;
  const int cores = int(std::thread::hardware_concurrency());
  std::string s = "backend: sim (simcuda on the CPU, " +
                  (workers > 0 ? std::to_string(workers) + " worker threads"
                               : std::to_string(cores) + " worker threads, one per core") +
                  ")";
#if defined(SIMCUDA_OWN_HEADERS)
  s += "; built without the CUDA toolkit (simcuda's own CUDA API headers)";
#elif defined(CUDART_VERSION)
  s += "; CUDA toolkit headers " + cuda_version(CUDART_VERSION);
#endif
  return s;
#else
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  return "backend: cuda (built with CUDA " + cuda_version(CUDART_VERSION) + ", runtime " +
         cuda_version(runtime) + ", driver " + (driver > 0 ? cuda_version(driver) : "none") +
         ")";
#endif
}

int run_info() {
  const int n = device_count();
  int current = 0;
  if (n > 0) CUDA_CHECK(cudaGetDevice(&current));
  std::printf("%s\n", backend_description().c_str());
  if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES"))
    std::printf("CUDA_VISIBLE_DEVICES=%s\n", v);
  std::printf("%d device%s%s\n", n, n == 1 ? "" : "s",
              n > 1 ? " (choose one with --device N)" : "");
  for (int d = 0; d < n; ++d)
    std::printf("%s %s\n", d == current ? "*" : " ", describe(d).c_str());
  if (n == 0) return 1;

  cudaDeviceProp p;
  CUDA_CHECK(cudaGetDeviceProperties(&p, current));
  std::printf("\ncurrent device %d\n", current);
  std::printf("  backend       %s\n", TIMBRE_BACKEND_SIM ? "sim (simcuda on the CPU)" : "cuda");
  std::printf("  compute cap.  %d.%d\n", p.major, p.minor);
  std::printf("  SMs/workers   %d\n", p.multiProcessorCount);
  std::printf("  memory        %.1f GiB\n", double(p.totalGlobalMem) / (1 << 30));
  std::printf("  shared/block  %zu bytes (opt-in up to %zu)\n", size_t(p.sharedMemPerBlock),
              size_t(p.sharedMemPerBlockOptin));
#if TIMBRE_BACKEND_SIM
  const simcuda::Options o = simcuda::options();
  std::printf("  thread order  %s\n", simcuda::describe(o.order, o.seed).c_str());
  std::printf("  poison        %s\n", o.poison ? "on" : "off");
  std::printf("  fast path     %s\n", o.fast_path ? "on" : "off");
#endif
  std::printf("\n%s", timbre::kernels::describe_defaults().c_str());
  return 0;
}

}  // namespace timbre::tools
