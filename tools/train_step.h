// train_step.h: one training step as the GPU wants it, queued without
// waiting.
//
// The host's part of a step is to queue work; it waits for the device only
// when it must show or check something. So:
//   * BatchUploads: the batch goes from a pinned host buffer to the device on
//     a copy stream (cudaMemcpyAsync, no host wait), ordered against the
//     compute stream by events, while earlier steps still compute. Its
//     slots are reused once their copy is done and their step has consumed
//     them; a slot still busy makes a new one instead of a wait.
//   * Labels are checked on the host when read (a bad label throws before
//     anything is queued), so the loss needs no read-back.
//   * StepLog: loss, accuracy and the finite checks accumulate on the device
//     (kernels/metrics.cuh, and the check fused into Adam's one launch) and
//     are read in one copy at most once a second (the progress refresh) and
//     at the end of an epoch. A non-finite loss or gradient is still named
//     exactly: the log keeps each pending step's epoch, step and samples.
// Between reads a step makes no host synchronisation; `timbre train
// --profile` counts them (kernels/profile.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/distributed.h"
#include "engine/optim.h"
#include "engine/random.h"
#include "kernels/metrics.cuh"
#include "kernels/profile.h"
#include "models/registry.h"
#include "tools/batches.h"

namespace timbre::tools {

// Per-band normalisation on the device, x <- (x - mean[r]) / std[r] for
// every row r of every (rows x frames) sample: the batch-norm evaluation
// kernel with gamma 1, beta 0, running mean = band mean and running var =
// std^2, viewing (N, 1, R, F) as NCHW (N, R, F, 1).
class BandNormaliser {
 public:
  BandNormaliser(const std::vector<float>& mean, const std::vector<float>& stddev);
  // host (n x rows x frames) -> device (n, 1, rows, frames), normalised
  // (a blocking upload: evaluation and statistics passes).
  Tensor operator()(const float* x, int64_t n, int rows, int frames) const;
  // device raw (n, 1, rows, frames) -> a new normalised tensor; no upload.
  Tensor operator()(const Tensor& raw) const;

 private:
  Tensor mean_, var_, ones_, zeros_;
};

// A batch on the device: raw features (n, 1, rows, frames) and labels (n),
// views of one upload slot.
struct DeviceBatch {
  Tensor x, labels;
};

class BatchUploads {
 public:
  BatchUploads() = default;
  ~BatchUploads();
  BatchUploads(const BatchUploads&) = delete;
  BatchUploads& operator=(const BatchUploads&) = delete;

  // Queues b's copy on the copy stream and makes the compute stream wait for
  // it. The views stay valid for the work the caller queues before it calls
  // consumed().
  DeviceBatch upload(const HostBatch& b, int rows, int frames);
  // The compute stream's work on the last upload is queued: its slot may be
  // overwritten once the device has done it.
  void consumed();

 private:
  struct Slot {
    size_t capacity = 0;    // bytes
    void* host = nullptr;   // pinned
    Tensor device;          // the device copy: features, then labels (i32 elements)
    cudaEvent_t copied = nullptr, used = nullptr;
    bool in_flight = false;
  };
  std::vector<Slot> slots_;
  size_t last_ = 0;
};

// Where a step was, for error messages.
struct StepPlace {
  int epoch = 0, step = 0;  // 0-based
  long long global = 0;     // 0-based
  std::vector<int64_t> samples;
  std::string str() const;  // "epoch 2, step 1 (global step 5), batch of train samples [...]"
};

// What the device summed since the epoch began (or since the resumed run's
// saved sums).
struct StepTotals {
  double loss_sum = 0;
  int64_t correct = 0, seen = 0;
};

class StepLog {
 public:
  StepLog();
  ~StepLog();
  StepLog(const StepLog&) = delete;
  StepLog& operator=(const StepLog&) = delete;

  // Sets the device sums (queued on the compute stream).
  void start(const StepTotals& t);
  // Where the next queued step is (for the errors read() throws): noted on
  // the host for every step, also one a graph replays.
  void note(StepPlace place);
  // Queues one step's sums (the device counts the step itself, so a graph
  // may capture this) and returns the finite check for its Adam step.
  kernels::AdamCheck add(const Tensor& logits, const Tensor& labels, const Tensor& loss) const;
  // One copy back and one host wait: the sums so far. Throws TrainError
  // naming the first step since the last read whose loss or gradient was
  // NaN or infinite (a gradient by the parameter's name from `names`).
  StepTotals read(const Adam& adam, const std::vector<std::string>& names);
  // Steps queued since the last read.
  size_t pending() const { return pending_.size(); }

 private:
  struct DeviceState {
    kernels::StepMetrics metrics;
    unsigned long long first_bad_gradient;
  };
  Tensor state_;                   // one DeviceState, as bytes
  DeviceState* host_ = nullptr;    // pinned mirror
  std::vector<StepPlace> pending_;
};

class StepGraphs;

// One training step from its parts: the trainer's loop and --profile run
// the same code.
struct TrainStep {
  models::Model& model;
  Adam& adam;
  const BandNormaliser& norm;
  BatchUploads& uploads;
  StepLog& log;
  Generator& gen;
  int rows, frames;
  StepGraphs* graphs = nullptr;  // null: every step queued launch by launch
  // Data-parallel with --sync-batchnorm: the step's batch norms take their
  // statistics over every rank's slice (ops::SyncBatchNormScope).
  bool sync_batchnorm = false;
  // Data-parallel: the gradients' all-reduce, bucket by bucket as backward
  // finishes them (null: a single process).
  dist::GradientBuckets* buckets = nullptr;
  // Queues the step on batch b (upload, forward, loss, backward, Adam with
  // the finite check) and returns without waiting for the device: through
  // `graphs` when set (a warm-up step, then one capture per batch size,
  // then replays), else launch by launch. b's labels must be in
  // [0, classes): the feature store checks every label when it opens a file.
  void run(const HostBatch& b, StepPlace place) const;
  // The device's part of a step on batch d, all on stream(): normalise,
  // forward, loss, metrics, backward, Adam. What a graph captures. Returns
  // the Philox counters it took (Generator::end_step).
  uint64_t queue(const DeviceBatch& d) const;
};

// CUDA graphs of the training step (--cuda-graph on), one per batch size.
//
// A step launched kernel by kernel costs the host a few microseconds per
// launch: some 200 of them per step. Captured once as a graph, the step is
// one cudaGraphLaunch. What a graph needs, and where it is:
//   * stream(), the engine's compute stream, is a created stream (the legacy
//     one cannot be captured);
//   * the batch is in a fixed buffer: each step copies its upload slot into
//     the graph's input buffer (one device-to-device copy, stream-ordered);
//   * what changes from step to step is read from device memory, never
//     passed as an argument: Adam's step count and learning rate
//     (kernels::AdamDeviceStep), the log's step index
//     (kernels::StepMetrics::steps), dropout's Philox offset (PhiloxDraw);
//     the host's copies of them move on by Adam::replayed and
//     Generator::replayed;
//   * the memory the graph's kernels use is a private pool of the caching
//     allocator (Allocator::begin_capture), kept until the graph is gone;
//   * the first step of a batch size runs uncaptured: it makes the
//     workspaces, the cuBLAS handle and the generator's device word, which
//     must not be made inside a capture.
// A replayed step is the same arithmetic on the same addresses as one run
// launch by launch: the weights are the same bits (tests/tools).
class StepGraphs {
 public:
  StepGraphs() = default;
  ~StepGraphs();  // waits for the stream, then frees the graphs and their pools
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;

  // Runs step on the uploaded batch d (see above). A capture that fails
  // throws std::runtime_error naming --cuda-graph off.
  void run(const TrainStep& step, const DeviceBatch& d);
  size_t pool_bytes() const;  // device memory the graphs hold

 private:
  struct Graph {
    int steps = 0;                       // run so far at this batch size
    Tensor input;                        // fixed: features, then labels (i32 elements)
    cudaGraphExec_t exec = nullptr;
    int pool = -1;
    uint64_t counters = 0;               // Philox counters one step takes
    kernels::profile::GraphCounts inside;  // its launches, for --profile
  };
  void capture(const TrainStep& step, Graph& g, const DeviceBatch& fixed);
  std::map<int64_t, Graph> by_batch_;
};

// A training step with the parts it owns: the optimiser, the parameters'
// names (for StepLog's errors), the band normaliser of the store, the
// upload slots and the step log. The trainer and --profile build it the
// same way. Holds references to its own members: neither copied nor moved.
struct StepParts {
  Adam adam;
  std::optional<dist::GradientBuckets> buckets;  // data-parallel: set by the trainer
  std::vector<std::string> names;
  BandNormaliser norm;
  BatchUploads uploads;
  StepLog log;
  StepGraphs graphs;  // destroyed first: it waits for the steps in flight
  TrainStep step;

  // cuda_graph: whether step.run captures and replays (--cuda-graph).
  StepParts(models::Model& model, const kernels::AdamConfig& config, double decay,
            const features::FeatureStore& store, Generator& gen, bool cuda_graph);
  StepParts(const StepParts&) = delete;
  StepParts& operator=(const StepParts&) = delete;
  // The log's totals since start(), read at a log point (StepLog::read).
  StepTotals read() { return log.read(adam, names); }
};

}  // namespace timbre::tools
