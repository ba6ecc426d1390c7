// distributed.h: the ranks of a data-parallel job.
//
// `mpirun -np N timbre train ...` (or `srun` under Slurm) starts N copies of
// the program; each is a rank with its own GPU (its local rank on its node).
// The ranks talk in two ways, each where it belongs:
//   * NCCL for the device buffers, queued on a stream of their own,
//     comm_stream(), forked from and joined to the compute stream by
//     events: the gradients' all-reduce in buckets that overlap the
//     backward pass (GradientBuckets), batch norm's sums with
//     --sync-batchnorm (kernels/batchnorm.cuh, BatchNormSync), the running
//     statistics' broadcast. One stream for every collective keeps them in
//     one order, the same on every rank, as NCCL needs. Graph capture
//     records them too (the comm stream joins the step's capture).
//   * MPI on the host, at log points only: the unique id that starts NCCL,
//     the epoch's summed metrics, the stop flag after a signal, and the end
//     of the job when a rank fails (MPI_Abort).
// simcuda implements NCCL's calls over MPI (kernels/sim/nccl.cpp), so the
// same code runs as N processes on a CPU and is tested in CI.
//
// A single process (no launcher in the environment, or a job of 1) starts
// neither MPI nor NCCL: every call here is then a no-op or the identity.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <cuda_runtime.h>
#include <nccl.h>

#include "engine/optim.h"
#include "kernels/batchnorm.cuh"

namespace timbre::dist {

// What the launcher put in the environment: Open MPI (OMPI_COMM_WORLD_*),
// Slurm's srun (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID), or MPICH/PMI
// (PMI_RANK, PMI_SIZE, MPI_LOCALRANKID).
struct Launch {
  int rank = 0, size = 1;
  int local_rank = 0, local_size = 1;
  std::string launcher = "none";
};
Launch launch_from_env();

// Starts the job when this process is one of several ranks: MPI, then the
// device of its local rank (`device` offsets it: local rank + device),
// then the NCCL communicator (rank 0 makes the id, MPI broadcasts it).
// (Under simcuda the ranks of one machine share its one device and its
// cores: simcuda gives each its share of workers unless SIMCUDA_WORKERS
// says otherwise.) Call it before any other CUDA call. Idempotent. Returns the launch.
const Launch& start(int device = 0);

// This process's place (rank 0 of 1 for a single process).
int rank();
int size();
bool active();  // started with more than one rank
bool is_root();  // rank 0: the rank that prints and writes

// The communicator, or null for a single process.
ncclComm_t comm();

// The stream every device collective runs on (null for a single process).
cudaStream_t comm_stream();

// What --sync-batchnorm passes to batch norm: this job's communicator and
// ranks, its all-reduce on comm_stream().
kernels::BatchNormSync batchnorm_sync();

// root's buffer on every rank, queued without waiting (a no-op for a
// single process): on comm_stream() after the work queued on stream() so
// far, and stream()'s later work after it.
void broadcast(float* d, size_t n, int root = 0);

// The gradients' all-reduce (average) in buckets that overlap the backward
// pass, as PyTorch's DDP does. Adam's flat gradient buffer is cut at
// parameter boundaries, from the last parameter to the first (the order in
// which backward finishes them), into buckets of about `bucket_bytes`
// (0: one bucket, reduced after the backward pass). When every gradient of
// a bucket is final (ready(leaf), from autograd's leaf hook), stream() records
// an event and the bucket's all-reduce is queued on comm_stream() behind
// it: the all-reduce runs while stream() goes on with the backward pass.
// finish() queues the buckets not yet reduced, then makes stream() wait
// for every bucket (Adam reads them next). Each rank runs the same graph,
// so the buckets are reduced in the same order everywhere. simcuda's
// all-reduce (and NCCL's on 2 ranks) adds each element's terms in one
// order whatever the buckets, so the result is the same bits; NCCL's ring
// on more ranks may order them by the message's size. A single process:
// every call is a no-op.
class GradientBuckets {
 public:
  // adam must lay its parameters out flat (Adam::is_flat).
  GradientBuckets(const Adam& adam, size_t bucket_bytes);
  void begin();                      // a backward pass starts: no bucket reduced
  void ready(const Variable& leaf);  // leaf's gradient is final (a leaf not of adam: ignored)
  void finish();                     // the rest reduced; stream() waits for them all
  size_t buckets() const { return buckets_.size(); }

 private:
  struct Bucket {
    int64_t begin, end;  // elements of grads
    int params = 0, waiting = 0;
    bool reduced = false;
  };
  void reduce(Bucket& b);
  float* grads_;
  std::vector<Bucket> buckets_;
  std::unordered_map<const void*, size_t> bucket_of_;  // parameter (Variable::id) -> bucket
};

// Host collectives (MPI), each rank calling them at the same point:
// sums of n doubles (the same bits on every rank), the largest of an int.
void host_sum(double* v, int n);
int host_max(int v);

// A watchdog for a rank that hangs: while armed (a data-parallel job
// only), a thread checks that heartbeat() is called at least once every
// `seconds`; if not, it prints "timbre: rank R of N: no progress in S s
// (...)" and ends the process with exit code 1, and the launcher ends
// the job. A rank that waits in a collective for a hung or stopped peer
// stops beating too, so every rank of a stuck job ends, not one. NCCL
// alone would wait for the peer forever. seconds <= 0: disarmed.
void arm_watchdog(double seconds, const std::string& where);
void heartbeat();
void disarm_watchdog();

// Ends the whole job from this rank: prints "timbre: rank R of N: what" on
// stderr, then MPI_Abort (the launcher ends the other ranks). For a single
// process it only prints and returns the code, for main to return.
int fail(const std::string& what, int code);

// MPI_Finalize after the communicator is gone (main's last step; no-op for
// a single process).
void finish();

}  // namespace timbre::dist
