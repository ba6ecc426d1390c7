// test_nccl.cpp: simcuda's NCCL subset over MPI (kernels/sim/nccl.cpp), run
// as 2 or more ranks under mpirun (tests/CMakeLists.txt): all-reduce (sum,
// average, max, min; f32, f64, i32) against the sum of every rank's inputs
// computed here, the same bits on every rank, broadcast and all-gather,
// collectives captured in a CUDA graph and replayed, in stream order with
// the kernels around them, and the errors NCCL documents for bad arguments.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <mpi.h>
#include <nccl.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cuda_check.h"
#include "kernels/device_buffer.h"
#include "tests/testing.h"

namespace {

using timbre::DeviceBuffer;

int g_rank = 0, g_size = 1;
ncclComm_t g_comm = nullptr;

// Rank r's inputs: the same on every rank that asks for them.
std::vector<float> inputs(int r, size_t n) { return timbre::testing::random_floats(n, 100u + unsigned(r)); }

// Whether every rank holds the same bytes.
bool same_everywhere(const void* p, size_t bytes) {
  std::vector<char> mine(static_cast<const char*>(p), static_cast<const char*>(p) + bytes);
  std::vector<char> root = mine;
  MPI_Bcast(root.data(), int(bytes), MPI_BYTE, 0, MPI_COMM_WORLD);
  int same = root == mine, all = 0;
  MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

TEST(Nccl, CommunicatorKnowsItsPlace) {
  int count = 0, rank = -1;
  ASSERT_EQ(ncclCommCount(g_comm, &count), ncclSuccess);
  ASSERT_EQ(ncclCommUserRank(g_comm, &rank), ncclSuccess);
  EXPECT_EQ(count, g_size);
  EXPECT_EQ(rank, g_rank);
  int version = 0;
  ASSERT_EQ(ncclGetVersion(&version), ncclSuccess);
  EXPECT_GE(version, 21000);  // ncclAvg exists from 2.10
}

TEST(Nccl, AllReduceSumAndAverageOfEveryRank) {
  const size_t n = 1001;  // odd
  const std::vector<float> x = inputs(g_rank, n);
  DeviceBuffer<float> send(n), sum(n), avg(n);
  send.copy_from_host(x);
  ASSERT_EQ(ncclAllReduce(send.get(), sum.get(), n, ncclFloat32, ncclSum, g_comm, nullptr), ncclSuccess);
  avg.copy_from_host(x);  // in place
  ASSERT_EQ(ncclAllReduce(avg.get(), avg.get(), n, ncclFloat32, ncclAvg, g_comm, nullptr), ncclSuccess);
  std::vector<double> want(n, 0.0);
  for (int r = 0; r < g_size; ++r) {
    const auto xr = inputs(r, n);
    for (size_t i = 0; i < n; ++i) want[i] += xr[i];
  }
  const auto got_sum = sum.to_host(), got_avg = avg.to_host();
  for (size_t i = 0; i < n; ++i) {
    // float sums of g_size values: a few ulps of the largest magnitude
    EXPECT_NEAR(got_sum[i], want[i], 1e-5 * g_size) << i;
    EXPECT_NEAR(got_avg[i], want[i] / g_size, 1e-5) << i;
  }
  EXPECT_TRUE(same_everywhere(got_sum.data(), n * sizeof(float)));
  EXPECT_TRUE(same_everywhere(got_avg.data(), n * sizeof(float)));
}

TEST(Nccl, AllReduceTypesAndOperations) {
  std::vector<double> d = {1.5 * g_rank, -2.0, 3.0 + g_rank};
  std::vector<int32_t> i = {g_rank, -g_rank, 7};
  DeviceBuffer<double> dd(d.size());
  DeviceBuffer<int32_t> di(i.size());
  dd.copy_from_host(d);
  di.copy_from_host(i);
  ASSERT_EQ(ncclAllReduce(dd.get(), dd.get(), d.size(), ncclFloat64, ncclMax, g_comm, nullptr), ncclSuccess);
  ASSERT_EQ(ncclAllReduce(di.get(), di.get(), i.size(), ncclInt32, ncclSum, g_comm, nullptr), ncclSuccess);
  const auto gd = dd.to_host();
  const auto gi = di.to_host();
  EXPECT_EQ(gd[0], 1.5 * (g_size - 1));
  EXPECT_EQ(gd[1], -2.0);
  EXPECT_EQ(gd[2], 3.0 + (g_size - 1));
  const int s = g_size * (g_size - 1) / 2;
  EXPECT_EQ(gi, (std::vector<int32_t>{s, -s, 7 * g_size}));
  dd.copy_from_host(d);
  ASSERT_EQ(ncclAllReduce(dd.get(), dd.get(), d.size(), ncclFloat64, ncclMin, g_comm, nullptr), ncclSuccess);
  EXPECT_EQ(dd.to_host()[0], 0.0);
}

TEST(Nccl, BroadcastAndAllGather) {
  const int root = g_size - 1;
  std::vector<float> x = {float(g_rank), 2.f * g_rank, -1.f};
  DeviceBuffer<float> b(3);
  b.copy_from_host(x);
  ASSERT_EQ(ncclBroadcast(b.get(), b.get(), 3, ncclFloat32, root, g_comm, nullptr), ncclSuccess);
  EXPECT_EQ(b.to_host(), (std::vector<float>{float(root), 2.f * root, -1.f}));
  DeviceBuffer<float> all(3 * size_t(g_size));
  ASSERT_EQ(ncclGroupStart(), ncclSuccess);
  ASSERT_EQ(ncclAllGather(b.get(), all.get(), 3, ncclFloat32, g_comm, nullptr), ncclSuccess);
  ASSERT_EQ(ncclGroupEnd(), ncclSuccess);
  const auto g = all.to_host();
  for (int r = 0; r < g_size; ++r) EXPECT_EQ(g[size_t(3 * r)], float(root)) << r;
}

// A collective on a created stream is stream-ordered, and a captured one
// is part of the graph: each replay reduces again (in place: x N, x N^2).
TEST(Nccl, CapturedInAGraphAndReplayed) {
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreate(&s));
  DeviceBuffer<float> v(5);
  v.copy_from_host(std::vector<float>(5, 1.f));
  cudaGraph_t graph;
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  ASSERT_EQ(ncclAllReduce(v.get(), v.get(), 5, ncclFloat32, ncclSum, g_comm, s), ncclSuccess);
  CUDA_CHECK(cudaStreamEndCapture(s, &graph));
  // Captured, not run.
  EXPECT_EQ(v.to_host(), std::vector<float>(5, 1.f));
  cudaGraphExec_t exec;
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_CHECK(cudaGraphLaunch(exec, s));
  CUDA_CHECK(cudaGraphLaunch(exec, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  EXPECT_EQ(v.to_host(), std::vector<float>(5, float(g_size * g_size)));
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
  CUDA_CHECK(cudaStreamDestroy(s));
}

TEST(Nccl, BadArgumentsAreRefused) {
  DeviceBuffer<float> d(4);
  std::vector<float> host(4);
  EXPECT_EQ(ncclAllReduce(d.get(), d.get(), 4, ncclFloat32, ncclSum, nullptr, nullptr),
            ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(host.data(), d.get(), 4, ncclFloat32, ncclSum, g_comm, nullptr),
            ncclInvalidArgument);
  EXPECT_NE(std::string(ncclGetLastError(g_comm)).find("device memory"), std::string::npos);
  EXPECT_EQ(ncclAllReduce(d.get(), d.get(), 8, ncclFloat32, ncclSum, g_comm, nullptr),
            ncclInvalidArgument);  // past the allocation's end
  EXPECT_EQ(ncclBroadcast(d.get(), d.get(), 4, ncclFloat32, g_size, g_comm, nullptr),
            ncclInvalidArgument);
  EXPECT_EQ(ncclGroupEnd(), ncclInvalidUsage);
  ncclUniqueId forged;
  std::memset(&forged, 7, sizeof forged);
  ncclComm_t c = nullptr;
  EXPECT_EQ(ncclCommInitRank(&c, g_size, forged, g_rank), ncclInvalidArgument);
  EXPECT_EQ(c, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  ::testing::InitGoogleTest(&argc, argv);
  ncclUniqueId id;
  if (g_rank == 0) ncclGetUniqueId(&id);
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
  if (ncclCommInitRank(&g_comm, g_size, id, g_rank) != ncclSuccess) {
    std::fprintf(stderr, "rank %d: ncclCommInitRank failed: %s\n", g_rank, ncclGetLastError(nullptr));
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  const int failed = RUN_ALL_TESTS();
  ncclCommDestroy(g_comm);
  int any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any;
}
