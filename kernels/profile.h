// profile.h: what the host asks of the device, counted where it asks.
//
// A training step's cost on a GPU is not only its kernels' time: every
// launch costs the host 3-5 us, every host synchronisation drains the
// device's queue, and every pageable copy stalls both. A Recorder counts,
// while it lives:
//   * kernel launches (every simcuda::launch, in both flavours, through
//     simcuda::launch_hook) and library calls (the cuBLAS GEMMs of
//     kernels/blas.h), each timed between two CUDA events on its stream;
//   * copies by direction and bytes, memsets (device-side fills, counted
//     with the copies: a graph holds them as memset nodes, not kernels),
//     and host synchronisations: any call
//     that waits for the device (a blocking cudaMemcpy, a stream, event or
//     device synchronize). Code that copies or waits says so through
//     record_copy and record_sync (engine/tensor.cpp, the trainer);
//   * CUDA graph launches, and the kernels and library calls they run (as
//     counted when the graph was captured: CaptureCounter). A replay is
//     timed as a whole by its caller, not kernel by kernel.
// With no Recorder alive, the hooks are one branch each.
//
// Events time the device on a GPU. Under simcuda every call completes before
// it returns and an event records the host's clock, so the same code times
// the CPU's execution.
#pragma once

#include <cuda_runtime_api.h>

#include <string>
#include <vector>

namespace timbre::kernels::profile {

enum class Copy { h2d, d2h, d2d, memset };

// A copy of `bytes` in direction `kind`; host_waits: the call returns only
// when the device has finished it (cudaMemcpy, as opposed to
// cudaMemcpyAsync). A waiting copy also counts as a host synchronisation.
void record_copy(Copy kind, size_t bytes, bool host_waits);
// A call that waits for the device: cudaStreamSynchronize,
// cudaEventSynchronize, cudaDeviceSynchronize.
void record_sync();

// What a captured CUDA graph runs at each launch: the kernel launches,
// library calls and copies issued while it was captured.
struct GraphCounts {
  long long kernels = 0, library_calls = 0;
  long long copies[4] = {0, 0, 0, 0}, bytes[4] = {0, 0, 0, 0};  // by Copy
};
// Counts the launches, library calls and copies issued while it lives (a
// stream capture: they are recorded into the graph, not run; record_copy
// then counts into it, not into a Recorder). One at a time; no
// events are recorded on a capturing stream (that would end the capture),
// so a Recorder alive meanwhile counts those launches but does not time them.
class CaptureCounter {
 public:
  CaptureCounter();
  ~CaptureCounter();
  CaptureCounter(const CaptureCounter&) = delete;
  CaptureCounter& operator=(const CaptureCounter&) = delete;
  GraphCounts stop();

 private:
  bool stopped_ = false;
};
// One cudaGraphLaunch of a graph holding `inside`.
void record_graph_launch(const GraphCounts& inside = {});

// Brackets one library call (a cuBLAS GEMM) the way launches are bracketed:
// counted, timed, and charged `flops` and `bytes` (its minimum traffic);
// `shape` describes it in a trace ("m=16384 n=16 k=9").
class LibraryCall {
 public:
  LibraryCall(const char* name, cudaStream_t s, double flops, double bytes,
              std::string shape = {});
  ~LibraryCall();
  LibraryCall(const LibraryCall&) = delete;
  LibraryCall& operator=(const LibraryCall&) = delete;

 private:
  const char* name_;
  cudaStream_t stream_;
  double flops_, bytes_;
  std::string shape_;
  bool active_;
};

// The trace of a step, for students: while a Recorder made with trace =
// true lives, every launch and library call is also kept in issue order
// with its shape (grid and block; a GEMM's m, n, k), and mark(label) closes
// a group: the work issued since the previous mark was issued by `label`.
// engine/autograd.cpp marks each op's forward (when the op records itself,
// after its kernels) and each backward rule; the trainer marks its own
// parts. Build labels only when tracing() says so.
bool tracing();
void mark(const std::string& label);

struct TraceKernel {
  std::string name, shape;
  double ms = 0;
};
struct TraceOp {
  std::string label;  // "forward conv2d (32, 1, 128, 128) -> (32, 16, 128, 128)"
  std::vector<TraceKernel> kernels;
};

struct KernelRow {
  std::string name;   // the kernel ("timbre::kernels::relu_forward<float>") or library call
  bool library = false;
  long long calls = 0;
  double ms = 0;      // device time, all calls
  double flops = 0;   // from the cost formulas where the launch site gives them (GEMMs)
  double bytes = 0;
};

struct Totals {
  long long kernel_launches = 0;
  long long library_calls = 0;
  long long graph_launches = 0;
  long long graph_kernels = 0, graph_library_calls = 0;  // run by those launches
  long long host_syncs = 0;
  long long h2d_copies = 0, d2h_copies = 0, d2d_copies = 0, memsets = 0;
  long long h2d_bytes = 0, d2h_bytes = 0, d2d_bytes = 0, memset_bytes = 0;
  std::vector<KernelRow> rows;  // by device time, longest first
  double device_ms = 0;         // sum over rows
  std::vector<TraceOp> trace;   // with trace = true: the groups in order
};

// Records from construction to stop(); one at a time per process (a second
// throws std::logic_error). stop() synchronises the device once to read the
// events, after the counted window has closed.
class Recorder {
 public:
  explicit Recorder(bool trace = false);
  ~Recorder();
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;
  Totals stop();

 private:
  bool stopped_ = false;
};

// The readable part of a kernel's name: the compiler's __PRETTY_FUNCTION__
// of a launch ("... [with auto Kernel = &(void ns::k<16>(int))]") becomes
// "ns::k<16>"; anything else is returned as it is.
std::string kernel_name(const std::string& pretty);

}  // namespace timbre::kernels::profile
