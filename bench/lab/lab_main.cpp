// The lab benchmark's driver: reads its flags, asks each family for its
// cases, checks every case against its CPU reference, times it, and prints
// the device's ceilings and (where cuDNN cases exist) timbre's best version
// of each op against cuDNN's.
//
//   lab_kernels [--lab_batch=N] [--lab_check_batch=N] [--lab_quick]
//               [google benchmark flags, e.g. --benchmark_filter='^conv2d/']
//
// --lab_batch (32, the models' training batch) is the batch timed;
// --lab_check_batch (2) the batch at which every case is compared with its
// CPU reference first (the references are plain loops: at the timed batch
// some would take minutes); --lab_quick times each case once at the check
// batch, with one block size (256 or the case's own), as CI's smoke run.
#include <benchmark/benchmark.h>
#include <cublas_v2.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "bench/lab/lab.h"
#include "kernels/cuda_check.h"

namespace timbre::lab {
namespace {

struct Settings {
  int batch = 32;
  int check_batch = 2;
  bool quick = false;
};
Settings g_settings;

std::vector<std::pair<const char*, void (*)()>>& families() {
  static std::vector<std::pair<const char*, void (*)()>> f;
  return f;
}
std::vector<Case>& cases() {
  static std::vector<Case> c;
  return c;
}

// What the device can do at best: bandwidth (GB/s) and FP32 FLOP/s.
struct Ceilings {
  double gbps = 0, gflops = 0;
  std::string how;
};

// FP32 lanes per SM by compute capability (CUDA C Programming Guide,
// "Arithmetic Instructions" throughput table): 7.x 64; 8.0 64; 8.6/8.7/8.9
// 128; 9.0 128; 10.x/12.x 128.
int fp32_lanes_per_sm(int major, int minor) {
  if (major == 7 || (major == 8 && minor == 0)) return 64;
  return 128;
}

// Seconds of the best of `reps` runs of f, timed with events.
template <class F>
double best_seconds(int reps, F&& f) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(a));
    f();
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    best = std::min(best, ms * 1e-3);
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  return best;
}

// From the device's attributes where it reports them (a GPU), else measured
// once: a 256 MiB device-to-device copy and a 1024^3 SGEMM (simcuda, whose
// device is the CPU: OpenBLAS and memcpy set its ceilings).
Ceilings ceilings() {
  Ceilings c;
  int mem_khz = 0, bus_bits = 0, sm_khz = 0, sms = 0, major = 0, minor = 0;
  const bool props =
      cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, 0) == cudaSuccess &&
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0) == cudaSuccess &&
      cudaDeviceGetAttribute(&sm_khz, cudaDevAttrClockRate, 0) == cudaSuccess &&
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0) == cudaSuccess &&
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) == cudaSuccess &&
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0) == cudaSuccess &&
      mem_khz > 0 && bus_bits > 0 && sm_khz > 0;
  (void)cudaGetLastError();  // an attribute the device does not report is not an error here
  if (props) {
    c.gbps = 2.0 * mem_khz * 1e3 * bus_bits / 8 / 1e9;  // double data rate
    c.gflops = 2.0 * fp32_lanes_per_sm(major, minor) * sms * sm_khz * 1e3 / 1e9;
    c.how = "device attributes (memory clock x bus width x 2; SMs x FP32 lanes x clock x 2)";
    return c;
  }
  const size_t n = size_t(64) << 20;
  DeviceBuffer<float> a(random_values<float>(n, 1)), b(n);
  const double copy_s = best_seconds(3, [&] {
    CUDA_CHECK(cudaMemcpy(b.get(), a.get(), n * sizeof(float), cudaMemcpyDeviceToDevice));
  });
  c.gbps = 2.0 * n * sizeof(float) / copy_s / 1e9;
  const int m = 1024;
  DeviceBuffer<float> x(random_values<float>(size_t(m) * m, 2)), y(random_values<float>(
      size_t(m) * m, 3)), z(size_t(m) * m);
  cublasHandle_t h;
  CUBLAS_CHECK(cublasCreate(&h));
  const float one = 1, zero = 0;
  const double gemm_s = best_seconds(3, [&] {
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, m, m, m, &one, x.get(), m, y.get(), m,
                             &zero, z.get(), m));
  });
  CUBLAS_CHECK(cublasDestroy(h));
  c.gflops = 2.0 * m * m * m / gemm_s / 1e9;
  c.how = "measured once (256 MiB device-to-device copy; 1024^3 SGEMM)";
  return c;
}

Ceilings g_ceilings;
int g_failed = 0;  // cases that differed from their reference (the exit status)

// One Run per case at the check batch, shared by the case's block sizes, so
// that a Run can compute its CPU reference once (the references are loops).
Run& probe_of(const Case& c) {
  static std::map<const Case*, std::unique_ptr<Run>> probes;
  auto& p = probes[&c];
  if (!p) p = c.make(g_settings.check_batch);
  return *p;
}

void run_case(benchmark::State& st, const Case& c, int block) {
  {
    Run& probe = probe_of(c);
    probe.run(block);
    CUDA_CHECK(cudaDeviceSynchronize());
    const std::string err = probe.check();
    if (!err.empty()) {
      ++g_failed;
      st.SkipWithError(("differs from the CPU reference: " + err).c_str());
      return;
    }
  }
  const int batch = g_settings.quick ? g_settings.check_batch : g_settings.batch;
  auto r = c.make(batch);
  r->run(block);  // warm-up (cuBLAS and cuDNN pick algorithms on first use)
  CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  double total = 0;
  for (auto _ : st) {
    CUDA_CHECK(cudaEventRecord(a));
    r->run(block);
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    st.SetIterationTime(ms * 1e-3);
    total += ms * 1e-3;
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  const kernels::Cost k = c.cost(batch);
  const double per_run = total / double(st.iterations());
  const double gbps = k.bytes / per_run / 1e9, gflops = k.flops / per_run / 1e9;
  st.counters["batch"] = batch;
  st.counters["GB/s"] = gbps;
  st.counters["GFLOP/s"] = gflops;
  st.counters["%bw"] = 100 * gbps / g_ceilings.gbps;
  st.counters["%flop"] = 100 * gflops / g_ceilings.gflops;
}

// Keeps each run's time to compare each cuDNN version, "cudnn_<op>", with
// timbre's best version of the same op at the same shape: "<op>" or
// "<op>_<variant>" (conv2d's cudnn_forward against forward_v1_direct and
// forward_v2_im2col, never against the backward ops timed at that shape).
class Collector : public benchmark::ConsoleReporter {
 public:
  struct Best {
    double timbre = 0, cudnn = 0;
    std::string timbre_name;
  };
  struct Timed {
    std::string version, block;
    double time;
  };
  std::map<std::string, std::map<std::string, double>> cudnn;  // "family shape" -> op -> time
  std::map<std::string, std::vector<Timed>> timbre;             // "family shape" -> its runs

  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.error_occurred) continue;
      const std::string name = r.benchmark_name();
      // family/version/shape/block:B[/manual_time]
      std::vector<std::string> part;
      size_t from = 0;
      for (size_t to; (to = name.find('/', from)) != std::string::npos; from = to + 1)
        part.push_back(name.substr(from, to - from));
      part.push_back(name.substr(from));
      if (part.size() < 4) continue;
      const std::string key = part[0] + " " + part[2];
      const double t = r.GetAdjustedRealTime();
      if (part[1].rfind("cudnn_", 0) == 0) {
        double& best = cudnn[key][part[1].substr(6)];
        if (best == 0 || t < best) best = t;
      } else {
        timbre[key].push_back({part[1], part[3], t});
      }
    }
  }

  // ("family shape", op) -> timbre's best version of the op and cuDNN's.
  std::map<std::pair<std::string, std::string>, Best> best() const {
    std::map<std::pair<std::string, std::string>, Best> out;
    for (const auto& [key, ops] : cudnn) {
      const auto mine = timbre.find(key);
      for (const auto& [op, t] : ops) {
        Best& b = out[{key, op}];
        b.cudnn = t;
        if (mine == timbre.end()) continue;
        for (const Timed& m : mine->second)
          if ((m.version == op || m.version.rfind(op + "_", 0) == 0) &&
              (b.timbre == 0 || m.time < b.timbre)) {
            b.timbre = m.time;
            b.timbre_name = m.version + "/" + m.block;
          }
      }
    }
    return out;
  }
};

}  // namespace

void add(Case c) { cases().push_back(std::move(c)); }
void add_family(const char* name, void (*body)()) { families().emplace_back(name, body); }

}  // namespace timbre::lab

int main(int argc, char** argv) {
  using namespace timbre::lab;
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    auto value = [&](const char* flag) -> const char* {
      const size_t n = std::strlen(flag);
      return std::strncmp(a, flag, n) == 0 && a[n] == '=' ? a + n + 1 : nullptr;
    };
    if (const char* v = value("--lab_batch")) {
      g_settings.batch = std::atoi(v);
    } else if (const char* v = value("--lab_check_batch")) {
      g_settings.check_batch = std::atoi(v);
    } else if (std::strcmp(a, "--lab_quick") == 0) {
      g_settings.quick = true;
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (g_settings.batch < 1 || g_settings.check_batch < 1) {
    std::fprintf(stderr, "lab_kernels: --lab_batch and --lab_check_batch must be >= 1\n");
    return 2;
  }
  int rest_argc = int(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 2;

  auto fams = families();
  std::sort(fams.begin(), fams.end(),
            [](const auto& x, const auto& y) { return std::strcmp(x.first, y.first) < 0; });
  for (const auto& f : fams) f.second();
  g_ceilings = ceilings();
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s\nceilings: %.1f GB/s, %.1f GFLOP/s FP32, %s\n", prop.name,
              g_ceilings.gbps, g_ceilings.gflops, g_ceilings.how.c_str());
  std::printf("batch: %d timed, %d checked against the CPU references first\n",
              g_settings.quick ? g_settings.check_batch : g_settings.batch,
              g_settings.check_batch);

  for (const Case& c : cases()) {
    std::vector<int> blocks = c.blocks;
    if (g_settings.quick && blocks.size() > 1)
      blocks = {std::find(blocks.begin(), blocks.end(), 256) != blocks.end() ? 256 : blocks[0]};
    for (int block : blocks) {
      const std::string name =
          c.family + "/" + c.version + "/" + c.shape + "/block:" + std::to_string(block);
      auto* b = benchmark::RegisterBenchmark(
          name.c_str(), [&c, block](benchmark::State& st) { run_case(st, c, block); });
      b->UseManualTime()->Unit(benchmark::kMicrosecond);
      if (g_settings.quick) b->Iterations(1);
    }
  }
  Collector collector;
  benchmark::RunSpecifiedBenchmarks(&collector);
  bool header = false;
  for (const auto& [key, best] : collector.best()) {
    if (best.cudnn == 0 || best.timbre == 0) continue;
    if (!header) std::printf("\ntimbre's best version against cuDNN (time ratio, < 1: timbre faster)\n");
    header = true;
    std::printf("  %-40s %-32s %.2f\n", key.first.c_str(), best.timbre_name.c_str(),
                best.timbre / best.cudnn);
  }
  benchmark::Shutdown();
  if (g_failed) {
    std::fprintf(stderr, "lab_kernels: %d case(s) differ from their CPU reference\n", g_failed);
    return 1;
  }
  return 0;
}
