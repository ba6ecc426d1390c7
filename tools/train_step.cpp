#include "tools/train_step.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <stdexcept>

#include "engine/allocator.h"
#include "engine/context.h"
#include "engine/distributed.h"
#include "engine/ops.h"
#include "kernels/batchnorm.cuh"
#include "kernels/cuda_check.h"
#include "kernels/profile.h"
#include "tools/train.h"

namespace timbre::tools {

namespace prof = kernels::profile;

// ------------------------------- normaliser --------------------------------
BandNormaliser::BandNormaliser(const std::vector<float>& mean, const std::vector<float>& stddev) {
  const int64_t r = int64_t(mean.size());
  std::vector<float> var(mean.size());
  for (size_t i = 0; i < var.size(); ++i)
    var[i] = std::max(stddev[i] * stddev[i], 1e-12f);  // a constant band: no division by 0
  mean_ = Tensor::from_host(Shape{r}, mean);
  var_ = Tensor::from_host(Shape{r}, var);
  ones_ = Tensor::full(Shape{r}, 1.0);
  zeros_ = Tensor::zeros(Shape{r});
}

Tensor BandNormaliser::operator()(const float* x, int64_t n, int rows, int frames) const {
  std::vector<float> h(x, x + n * rows * frames);
  return (*this)(Tensor::from_host(Shape{n, 1, rows, frames}, h));
}

Tensor BandNormaliser::operator()(const Tensor& raw) const {
  const int64_t n = raw.size(0);
  const int rows = int(raw.size(2)), frames = int(raw.size(3));
  Tensor t = Tensor::empty(raw.shape());
  kernels::batchnorm_forward_eval<float>({raw.data<float>(), ones_.data<float>(),
                                          zeros_.data<float>(), mean_.data<float>(),
                                          var_.data<float>(), t.data<float>()},
                                         {int(n), rows, frames, 1}, 0.0, stream());
  return t;
}

// --------------------------------- uploads ---------------------------------
BatchUploads::~BatchUploads() {
  for (Slot& s : slots_) {
    // The device may still read the pinned buffer: wait for the copies.
    if (s.copied) CUDA_CHECK_LOG(cudaEventSynchronize(s.copied));
    if (s.host) CUDA_CHECK_LOG(cudaFreeHost(s.host));
    if (s.copied) CUDA_CHECK_LOG(cudaEventDestroy(s.copied));
    if (s.used) CUDA_CHECK_LOG(cudaEventDestroy(s.used));
  }
}

DeviceBatch BatchUploads::upload(const HostBatch& b, int rows, int frames) {
  const size_t x_bytes = b.x.size() * sizeof(float), y_bytes = b.y.size() * sizeof(int32_t);
  // A free slot: its copy done (the pinned buffer may be rewritten) and its
  // step's kernels done (the device buffers may be rewritten). Asked, never
  // waited for: a busy ring grows by one slot.
  size_t pick = slots_.size();
  for (size_t k = 0; k < slots_.size(); ++k) {
    const size_t i = (last_ + 1 + k) % slots_.size();
    Slot& s = slots_[i];
    const bool free = !s.in_flight || (cudaEventQuery(s.copied) == cudaSuccess &&
                                       cudaEventQuery(s.used) == cudaSuccess);
    if (free && s.capacity >= x_bytes + y_bytes) {
      pick = i;
      break;
    }
  }
  if (pick == slots_.size()) {
    Slot s;
    s.capacity = x_bytes + y_bytes;
    CUDA_CHECK(cudaMallocHost(&s.host, s.capacity));
    CUDA_CHECK(cudaEventCreateWithFlags(&s.copied, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&s.used, cudaEventDisableTiming));
    slots_.push_back(std::move(s));
  }
  Slot& s = slots_[pick];
  last_ = pick;
  const int64_t n = b.n();
  if (!s.device.defined() || s.device.numel() < int64_t(x_bytes + y_bytes) / 4)
    s.device = Tensor::empty(Shape{int64_t((s.capacity + 3) / 4)}, DType::i32);
  std::memcpy(s.host, b.x.data(), x_bytes);
  std::memcpy(static_cast<char*>(s.host) + x_bytes, b.y.data(), y_bytes);
  // The slot's device bytes are free once the compute stream has passed
  // the step that used them.
  cudaStream_t cs = copy_stream();
  if (s.in_flight) CUDA_CHECK(cudaStreamWaitEvent(cs, s.used, 0));
  prof::record_copy(prof::Copy::h2d, x_bytes + y_bytes, false);
  CUDA_CHECK(cudaMemcpyAsync(s.device.raw(), s.host, x_bytes + y_bytes, cudaMemcpyHostToDevice,
                             cs));
  CUDA_CHECK(cudaEventRecord(s.copied, cs));
  CUDA_CHECK(cudaStreamWaitEvent(stream(), s.copied, 0));
  s.in_flight = true;
  // Views: the labels' bytes follow the features'.
  DeviceBatch d;
  const Tensor all = s.device;
  d.labels = all.slice(int64_t(x_bytes / 4), Shape{n});
  d.x = all.slice(0, Shape{n, 1, rows, frames}).bitcast(DType::f32);
  return d;
}

void BatchUploads::consumed() {
  if (slots_.empty()) return;
  CUDA_CHECK(cudaEventRecord(slots_[last_].used, stream()));
}

// --------------------------------- the log ---------------------------------
std::string StepPlace::str() const {
  std::string idx;
  for (size_t i = 0; i < samples.size() && i < 8; ++i)
    idx += (i ? "," : "") + std::to_string(samples[i]);
  if (samples.size() > 8) idx += ",...";
  return "epoch " + std::to_string(epoch + 1) + ", step " + std::to_string(step + 1) +
         " (global step " + std::to_string(global + 1) + "), batch of train samples [" + idx +
         "]";
}

namespace {
constexpr int kElementBits = 40;  // the Adam check's tag: pending step << 40 | element
}

StepLog::StepLog() {
  state_ = Tensor::empty(Shape{int64_t(sizeof(DeviceState) / 4)}, DType::i32);
  void* h = nullptr;
  CUDA_CHECK(cudaMallocHost(&h, sizeof(DeviceState)));
  host_ = static_cast<DeviceState*>(h);
  start({});
}

StepLog::~StepLog() {
  if (host_) {
    CUDA_CHECK_LOG(cudaStreamSynchronize(stream()));  // a queued copy may still write it
    CUDA_CHECK_LOG(cudaFreeHost(host_));
  }
}

void StepLog::start(const StepTotals& t) {
  // The copy reads the pinned mirror when the stream reaches it: wait for
  // the queue first (an epoch boundary, where the host has waited anyway).
  CUDA_CHECK(cudaStreamSynchronize(stream()));
  prof::record_sync();
  *host_ = DeviceState{};
  host_->metrics.loss_sum = t.loss_sum;
  host_->metrics.correct = (unsigned long long)t.correct;
  host_->metrics.samples = (unsigned long long)t.seen;
  host_->first_bad_gradient = ~0ull;
  prof::record_copy(prof::Copy::h2d, sizeof(DeviceState), false);
  CUDA_CHECK(cudaMemcpyAsync(state_.raw(), host_, sizeof(DeviceState), cudaMemcpyHostToDevice,
                             stream()));
  pending_.clear();
}

void StepLog::note(StepPlace place) { pending_.push_back(std::move(place)); }

kernels::AdamCheck StepLog::add(const Tensor& logits, const Tensor& labels,
                                const Tensor& loss) const {
  auto* dev = static_cast<DeviceState*>(state_.raw());
  kernels::accumulate_step_metrics<float>(logits.data<float>(), labels.data<int32_t>(),
                                          loss.data<float>(), int(logits.size(0)),
                                          int(logits.size(1)), &dev->metrics, stream());
  // The step's index is the device's count (the metrics launch just
  // advanced it), in the tag's high bits.
  return kernels::AdamCheck{&dev->first_bad_gradient, 0, &dev->metrics.steps, kElementBits};
}

StepTotals StepLog::read(const Adam& adam, const std::vector<std::string>& names) {
  prof::record_copy(prof::Copy::d2h, sizeof(DeviceState), false);
  CUDA_CHECK(cudaMemcpyAsync(host_, state_.raw(), sizeof(DeviceState), cudaMemcpyDeviceToHost,
                             stream()));
  prof::record_sync();
  CUDA_CHECK(cudaStreamSynchronize(stream()));
  const DeviceState s = *host_;
  // The device numbers steps from start(); pending_ from the last read.
  const unsigned long long first = s.metrics.steps - pending_.size();
  const unsigned long long bad_loss = s.metrics.first_nonfinite - first;
  const unsigned long long bad_grad_step = (s.first_bad_gradient >> kElementBits) - first;
  if (s.metrics.first_nonfinite != ~0ull && bad_loss < pending_.size() && bad_loss <= bad_grad_step)
    throw TrainError("non-finite loss (NaN or infinite) at " + pending_[bad_loss].str());
  if (s.first_bad_gradient != ~0ull && bad_grad_step < pending_.size()) {
    const int64_t element = int64_t(s.first_bad_gradient & ((1ull << kElementBits) - 1));
    const int i = adam.parameter_at(element);
    const std::string name = i >= 0 && size_t(i) < names.size() ? names[size_t(i)] : "a parameter";
    throw TrainError("non-finite gradient of " + name + " at " + pending_[bad_grad_step].str());
  }
  pending_.clear();
  StepTotals t;
  t.loss_sum = s.metrics.loss_sum;
  t.correct = int64_t(s.metrics.correct);
  t.seen = int64_t(s.metrics.samples);
  return t;
}

uint64_t TrainStep::queue(const DeviceBatch& d) const {
  // The marks name the trainer's own parts in a --trace (kernels/profile.h);
  // the ops mark themselves.
  gen.begin_step();
  std::optional<ops::SyncBatchNormScope> sync;
  if (sync_batchnorm) sync.emplace(dist::batchnorm_sync());
  const Tensor x = norm(d.x);
  prof::mark("normalise the bands of " + d.x.shape().str());
  Variable logits = model.forward(Variable(x), gen);
  Variable loss = ops::cross_entropy(logits, d.labels, ops::Labels::checked);
  const kernels::AdamCheck check = log.add(logits.value(), d.labels, loss.value());
  prof::mark("step metrics: loss and accuracy summed on the device");
  model.zero_grad();
  if (buckets) {
    // Data-parallel: every rank's gradients, of the mean loss over its
    // slice, averaged in place: the gradient of the mean loss over the
    // global batch, the same bits on every rank, so every rank's Adam step
    // is the same. A bucket's NCCL all-reduce starts on the comm stream as
    // soon as backward has finished its gradients, while the backward
    // pass goes on; Adam waits for them all.
    buckets->begin();
    loss.backward([this](const Variable& leaf) { buckets->ready(leaf); });
    buckets->finish();
    prof::mark("all-reduce the gradients over " + std::to_string(dist::size()) + " ranks in " +
               std::to_string(buckets->buckets()) + " buckets, each as backward finished it (NCCL)");
  } else {
    loss.backward();
  }
  adam.step(check);
  const uint64_t counters = gen.end_step();
  if (prof::tracing())
    prof::mark("Adam over " + std::to_string(adam.parameters().size()) +
               " parameter tensors, the finite check fused");
  return counters;
}

void TrainStep::run(const HostBatch& b, StepPlace place) const {
  log.note(std::move(place));
  const DeviceBatch d = uploads.upload(b, rows, frames);
  prof::mark("upload " + d.x.shape().str() + " (copy stream)");
  if (graphs != nullptr) {
    graphs->run(*this, d);
  } else {
    queue(d);
    uploads.consumed();
  }
}

// --------------------------------- graphs ----------------------------------
StepGraphs::~StepGraphs() {
  if (by_batch_.empty()) return;
  CUDA_CHECK_LOG(cudaStreamSynchronize(stream()));  // replays may be in flight
  for (auto& [n, g] : by_batch_) {
    if (g.exec) CUDA_CHECK_LOG(cudaGraphExecDestroy(g.exec));
    if (g.pool >= 0) Allocator::instance().release_pool(g.pool);
  }
}

size_t StepGraphs::pool_bytes() const {
  size_t bytes = 0;
  for (const auto& [n, g] : by_batch_)
    if (g.pool >= 0) bytes += Allocator::instance().pool_bytes(g.pool);
  return bytes;
}

void StepGraphs::capture(const TrainStep& step, Graph& g, const DeviceBatch& fixed) {
  // Captured, not run: the host's counters (Adam's steps, the generator's
  // offset) move on as for a step run, and the caller's launch runs it.
  Allocator& alloc = Allocator::instance();
  g.pool = alloc.begin_capture();
  cudaGraph_t graph = nullptr;
  try {
    CUDA_CHECK(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeGlobal));
    prof::CaptureCounter counter;
    try {
      g.counters = step.queue(fixed);
    } catch (...) {
      cudaStreamEndCapture(stream(), &graph);  // ends the capture; the error is the one thrown
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    g.inside = counter.stop();
    CUDA_CHECK(cudaStreamEndCapture(stream(), &graph));
    CUDA_CHECK(cudaGraphInstantiate(&g.exec, graph, 0));
    CUDA_CHECK(cudaGraphDestroy(graph));  // the executable graph keeps what it needs
  } catch (const std::exception& e) {
    alloc.end_capture();
    throw std::runtime_error(std::string("capturing the training step of batch size ") +
                             std::to_string(fixed.x.size(0)) + " as a CUDA graph failed: " +
                             e.what() + " (train with --cuda-graph off to run it launch by launch)");
  }
  alloc.end_capture();
}

void StepGraphs::run(const TrainStep& step, const DeviceBatch& d) {
  Graph& g = by_batch_[d.x.size(0)];
  if (g.steps++ == 0) {  // the warm-up step of this batch size
    step.queue(d);
    step.uploads.consumed();
    return;
  }
  // The graph reads the batch from its own buffer, in one copy (the upload
  // slot holds the labels right after the features); the slot is free
  // again once the copy has run.
  const size_t x_bytes = d.x.bytes(), bytes = x_bytes + d.labels.bytes();
  if (static_cast<const char*>(d.x.raw()) + x_bytes != d.labels.raw())
    throw std::logic_error("StepGraphs: the labels do not follow the features");
  if (!g.input.defined()) g.input = Tensor::empty(Shape{int64_t(bytes / 4)}, DType::i32);
  prof::record_copy(prof::Copy::d2d, bytes, false);
  CUDA_CHECK(cudaMemcpyAsync(g.input.raw(), d.x.raw(), bytes, cudaMemcpyDeviceToDevice, stream()));
  step.uploads.consumed();
  if (g.exec == nullptr) {
    DeviceBatch fixed;
    fixed.x = g.input.slice(0, d.x.shape()).bitcast(DType::f32);
    fixed.labels = g.input.slice(int64_t(x_bytes / 4), d.labels.shape());
    capture(step, g, fixed);
  } else {
    step.adam.replayed();
    step.gen.replayed(g.counters);
  }
  prof::record_graph_launch(g.inside);
  CUDA_CHECK(cudaGraphLaunch(g.exec, stream()));
}

namespace {
std::vector<std::string> parameter_names(const models::Model& model) {
  std::vector<std::string> names;
  for (const auto& [name, v] : model.named_parameters()) names.push_back(name);
  return names;
}
}  // namespace

StepParts::StepParts(models::Model& model, const kernels::AdamConfig& config, double decay,
                     const features::FeatureStore& store, Generator& gen, bool cuda_graph)
    : adam(model.parameters(), config, decay),
      names(parameter_names(model)),
      norm(store.band_mean(), store.band_std()),
      step{model, adam, norm, uploads, log, gen, store.rows(), store.frames(),
           cuda_graph ? &graphs : nullptr} {}

}  // namespace timbre::tools
