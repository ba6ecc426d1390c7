// nccl.cpp: simcuda's NCCL subset over MPI.
//
// On a GPU, NCCL moves data between devices over NVLink, PCIe or the
// network, inside kernels queued on a stream. Here every rank is a process
// on the CPU and "device memory" is host memory, so a collective is an MPI
// collective on the same buffers, run as host work on the stream it was
// queued on (simcuda::detail::host_work): in stream order with the kernels
// around it, recorded into a graph when the stream is being captured (NCCL
// collectives may be captured on a GPU too), run later under
// SIMCUDA_STREAMS=adversarial like any other queued work.
//
// What follows NCCL's contract:
//   * a communicator is made by every rank with the same ncclUniqueId, which
//     rank 0 makes and the program hands to the others itself (timbre
//     broadcasts it over MPI, as NCCL's documentation shows);
//   * every rank gets the same bits from an all-reduce: the sum is reduced
//     to rank 0 in rank order and broadcast from there (NCCL's ring gives
//     every rank the same bits too), so replicas never drift apart;
//   * ncclAvg is the sum divided by the rank count, in the buffer's type;
//   * group calls (ncclGroupStart/End) only nest: collectives run in the
//     order they were issued, which every rank shares.
// What is simpler: a communicator spans MPI_COMM_WORLD (nranks must be the
// world's size and rank the world rank), and errors are reported when the
// call is made or by MPI's default handler, which ends the whole job (so
// ncclCommGetAsyncError only reports an abort).
#include <nccl.h>

#include <mpi.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/sim/internal.h"

struct ncclComm {
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0, size = 1;
  bool aborted = false;
};

namespace {

constexpr char kMagic[] = "simcuda-nccl";
thread_local std::string t_last_error;
thread_local int t_group_depth = 0;

ncclResult_t fail(ncclResult_t r, std::string why) {
  t_last_error = std::move(why);
  return r;
}

bool type_info(ncclDataType_t t, MPI_Datatype* mpi, size_t* bytes) {
  switch (t) {
    case ncclInt8: *mpi = MPI_INT8_T; *bytes = 1; return true;
    case ncclUint8: *mpi = MPI_UINT8_T; *bytes = 1; return true;
    case ncclInt32: *mpi = MPI_INT32_T; *bytes = 4; return true;
    case ncclUint32: *mpi = MPI_UINT32_T; *bytes = 4; return true;
    case ncclInt64: *mpi = MPI_INT64_T; *bytes = 8; return true;
    case ncclUint64: *mpi = MPI_UINT64_T; *bytes = 8; return true;
    case ncclFloat32: *mpi = MPI_FLOAT; *bytes = 4; return true;
    case ncclFloat64: *mpi = MPI_DOUBLE; *bytes = 8; return true;
    default: return false;  // half precision: timbre does not use it
  }
}

bool op_info(ncclRedOp_t op, MPI_Op* mpi) {
  switch (op) {
    case ncclSum: case ncclAvg: *mpi = MPI_SUM; return true;
    case ncclProd: *mpi = MPI_PROD; return true;
    case ncclMax: *mpi = MPI_MAX; return true;
    case ncclMin: *mpi = MPI_MIN; return true;
    default: return false;
  }
}

// Whether [p, p + bytes) is simulated device memory (both ends).
bool on_device(const void* p, size_t bytes) {
  if (!p) return false;
  cudaPointerAttributes a;
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess || a.type != cudaMemoryTypeDevice)
    return false;
  if (bytes == 0) return true;
  const void* last = static_cast<const char*>(p) + bytes - 1;
  return cudaPointerGetAttributes(&a, last) == cudaSuccess && a.type == cudaMemoryTypeDevice;
}

ncclResult_t check_comm(ncclComm_t comm, const char* api) {
  if (!comm) return fail(ncclInvalidArgument, std::string(api) + ": null communicator");
  if (comm->aborted)
    return fail(ncclInvalidUsage, std::string(api) + ": the communicator was aborted");
  return ncclSuccess;
}

template <class T>
void divide(void* p, size_t n, int by) {
  T* v = static_cast<T*>(p);
  for (size_t i = 0; i < n; ++i) v[i] = T(v[i] / T(by));
}

void scale_for_avg(ncclDataType_t t, void* p, size_t n, int ranks) {
  switch (t) {
    case ncclFloat32: divide<float>(p, n, ranks); break;
    case ncclFloat64: divide<double>(p, n, ranks); break;
    case ncclInt8: divide<int8_t>(p, n, ranks); break;
    case ncclUint8: divide<uint8_t>(p, n, ranks); break;
    case ncclInt32: divide<int32_t>(p, n, ranks); break;
    case ncclUint32: divide<uint32_t>(p, n, ranks); break;
    case ncclInt64: divide<int64_t>(p, n, ranks); break;
    case ncclUint64: divide<uint64_t>(p, n, ranks); break;
    default: break;
  }
}

}  // namespace

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  if (!version) return fail(ncclInvalidArgument, "ncclGetVersion: null pointer");
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return fail(ncclInvalidArgument, "ncclGetUniqueId: null pointer");
  std::memset(id->internal, 0, sizeof id->internal);
  std::memcpy(id->internal, kMagic, sizeof kMagic);
  std::random_device rd;
  for (size_t i = sizeof kMagic; i + 4 <= sizeof id->internal; i += 4) {
    const uint32_t r = rd();
    std::memcpy(id->internal + i, &r, 4);
  }
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  if (!comm) return fail(ncclInvalidArgument, "ncclCommInitRank: null communicator pointer");
  *comm = nullptr;
  if (std::memcmp(id.internal, kMagic, sizeof kMagic) != 0)
    return fail(ncclInvalidArgument, "ncclCommInitRank: the unique id was not made by ncclGetUniqueId");
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised)
    return fail(ncclInvalidUsage,
                "ncclCommInitRank: simcuda's NCCL runs over MPI: call MPI_Init first");
  int world_size = 0, world_rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  if (nranks != world_size || rank != world_rank)
    return fail(ncclInvalidArgument,
                "ncclCommInitRank: simcuda's communicators span MPI_COMM_WORLD: nranks " +
                    std::to_string(nranks) + " and rank " + std::to_string(rank) +
                    " must be the world's size " + std::to_string(world_size) + " and rank " +
                    std::to_string(world_rank));
  // Every rank must hold rank 0's id (NCCL would hang or fail to connect).
  std::vector<char> root_id(id.internal, id.internal + NCCL_UNIQUE_ID_BYTES);
  MPI_Bcast(root_id.data(), NCCL_UNIQUE_ID_BYTES, MPI_CHAR, 0, MPI_COMM_WORLD);
  int same = std::memcmp(root_id.data(), id.internal, NCCL_UNIQUE_ID_BYTES) == 0, all_same = 0;
  MPI_Allreduce(&same, &all_same, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!all_same)
    return fail(ncclInvalidArgument,
                "ncclCommInitRank: the ranks passed different unique ids (rank 0 makes one "
                "with ncclGetUniqueId and every rank must pass that one)");
  auto* c = new ncclComm;
  MPI_Comm_dup(MPI_COMM_WORLD, &c->mpi);
  c->rank = rank;
  c->size = nranks;
  *comm = c;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm->mpi != MPI_COMM_NULL) MPI_Comm_free(&comm->mpi);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  // The other ranks may be inside a collective with this one: freeing the
  // MPI communicator could wait for them, so it is left to MPI_Finalize
  // or the process's end.
  comm->aborted = true;
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* error) {
  if (!comm || !error) return fail(ncclInvalidArgument, "ncclCommGetAsyncError: null pointer");
  *error = comm->aborted ? ncclInvalidUsage : ncclSuccess;
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (!comm || !count) return fail(ncclInvalidArgument, "ncclCommCount: null pointer");
  *count = comm->size;
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (!comm || !rank) return fail(ncclInvalidArgument, "ncclCommUserRank: null pointer");
  *rank = comm->rank;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t) { return t_last_error.c_str(); }

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  if (auto r = check_comm(comm, "ncclAllReduce"); r != ncclSuccess) return r;
  MPI_Datatype mt;
  MPI_Op mo;
  size_t bytes = 0;
  if (!type_info(type, &mt, &bytes))
    return fail(ncclInvalidArgument, "ncclAllReduce: unsupported data type " + std::to_string(type));
  if (!op_info(op, &mo))
    return fail(ncclInvalidArgument, "ncclAllReduce: unsupported operation " + std::to_string(op));
  if (!on_device(send, count * bytes) || !on_device(recv, count * bytes))
    return fail(ncclInvalidArgument, "ncclAllReduce: buffers must be device memory");
  const MPI_Comm mpi = comm->mpi;
  const int rank = comm->rank, size = comm->size;
  simcuda::detail::host_work(stream, [=] {
    if (count == 0) return;
    // Reduce to rank 0, then broadcast: every rank gets rank 0's bits.
    if (rank == 0)
      MPI_Reduce(send == recv ? MPI_IN_PLACE : send, recv, int(count), mt, mo, 0, mpi);
    else
      MPI_Reduce(send, nullptr, int(count), mt, mo, 0, mpi);
    if (rank == 0 && op == ncclAvg) scale_for_avg(type, recv, count, size);
    MPI_Bcast(recv, int(count), mt, 0, mpi);
  });
  return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type,
                           int root, ncclComm_t comm, cudaStream_t stream) {
  if (auto r = check_comm(comm, "ncclBroadcast"); r != ncclSuccess) return r;
  MPI_Datatype mt;
  size_t bytes = 0;
  if (!type_info(type, &mt, &bytes))
    return fail(ncclInvalidArgument, "ncclBroadcast: unsupported data type " + std::to_string(type));
  if (root < 0 || root >= comm->size)
    return fail(ncclInvalidArgument, "ncclBroadcast: root " + std::to_string(root) +
                                         " is not a rank of " + std::to_string(comm->size));
  if ((comm->rank == root && !on_device(send, count * bytes)) || !on_device(recv, count * bytes))
    return fail(ncclInvalidArgument, "ncclBroadcast: buffers must be device memory");
  const MPI_Comm mpi = comm->mpi;
  const bool is_root = comm->rank == root;
  simcuda::detail::host_work(stream, [=] {
    if (count == 0) return;
    if (is_root && send != recv) std::memcpy(recv, send, count * bytes);
    MPI_Bcast(recv, int(count), mt, root, mpi);
  });
  return ncclSuccess;
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t stream) {
  if (auto r = check_comm(comm, "ncclAllGather"); r != ncclSuccess) return r;
  MPI_Datatype mt;
  size_t bytes = 0;
  if (!type_info(type, &mt, &bytes))
    return fail(ncclInvalidArgument, "ncclAllGather: unsupported data type " + std::to_string(type));
  if (!on_device(send, count * bytes) || !on_device(recv, count * bytes * comm->size))
    return fail(ncclInvalidArgument, "ncclAllGather: buffers must be device memory");
  const MPI_Comm mpi = comm->mpi;
  const size_t mine = count * bytes * size_t(comm->rank);
  simcuda::detail::host_work(stream, [=] {
    if (count == 0) return;
    // In place when send is this rank's slot of recv (NCCL's rule).
    const bool in_place = static_cast<const char*>(recv) + mine == send;
    MPI_Allgather(in_place ? MPI_IN_PLACE : send, int(count), mt, recv, int(count), mt, mpi);
  });
  return ncclSuccess;
}

ncclResult_t ncclGroupStart(void) {
  ++t_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void) {
  if (t_group_depth == 0) return fail(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  --t_group_depth;
  return ncclSuccess;
}

}  // extern "C"
