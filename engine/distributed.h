// distributed.h: the ranks of a data-parallel job.
//
// `mpirun -np N timbre train ...` (or `srun` under Slurm) starts N copies of
// the program; each is a rank with its own GPU (its local rank on its node).
// The ranks talk in two ways, each where it belongs:
//   * NCCL for the device buffers, queued on the compute stream like a
//     kernel: the gradients' all-reduce in every step, batch norm's sums
//     with --sync-batchnorm (kernels/batchnorm.cuh, BatchNormSync), the
//     running statistics' broadcast. Graph capture records them too.
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
#include <string>

#include <nccl.h>

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

// Device collectives on stream(), queued without waiting (no-ops for a
// single process). all_reduce_avg: every rank gets the mean of the ranks'
// buffers; all_reduce_sum: their sum; broadcast: root's buffer everywhere.
void all_reduce_avg(float* d, size_t n);
void all_reduce_sum(double* d, size_t n);
void broadcast(float* d, size_t n, int root = 0);

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
