// The NCCL communicator on one GPU (a world of one: one device cannot hold two NCCL ranks):
// every call runs, data lands where it should, Abort turns later calls into errors.
// Without a GPU it prints why and exits 77 (CTest: skipped).
#define DOCTEST_CONFIG_IMPLEMENT
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <cstdio>
#include <vector>

#include "kernels/cuda/runtime_info.h"
#include "worker/comm/nccl_communicator.h"
#include "worker/comm/solo_communicator.h"

using moerun::Status;
using moerun::comm::NcclCommunicator;
using moerun::comm::SoloCommunicator;

TEST_CASE("NCCL world of one: collectives, alltoallv, split, abort") {
  SoloCommunicator boot;
  auto c = NcclCommunicator::Create(&boot, 0, 20000);
  REQUIRE_MESSAGE(c.ok(), c.status().ToString());
  const size_t n = 1 << 20;
  std::vector<float> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = float(i % 97);
  float *a = nullptr, *b = nullptr;
  REQUIRE(cudaMalloc(&a, n * 4) == cudaSuccess);
  REQUIRE(cudaMalloc(&b, n * 4) == cudaSuccess);
  REQUIRE(cudaMemcpy(a, host.data(), n * 4, cudaMemcpyHostToDevice) == cudaSuccess);
  CHECK(c.value()->AllReduceSum(a, n).ok());
  CHECK(c.value()->Broadcast(0, a, n * 4).ok());
  CHECK(c.value()->AllToAllV(a, {n * 4}, b, {n * 4}).ok());
  CHECK(c.value()->Barrier().ok());
  std::vector<float> back(n);
  REQUIRE(cudaMemcpy(back.data(), b, n * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(back == host);  // one rank: the sum is the input, the exchange a copy
  // A send and a receive in one group, here to itself (a pipeline neighbour in a world of
  // more): the receive gets what was sent.
  REQUIRE(cudaMemset(b, 0, n * 4) == cudaSuccess);
  CHECK(c.value()->SendRecv(0, 1, a, n * 4, 0, 1, b, n * 4).ok());
  REQUIRE(cudaMemcpy(back.data(), b, n * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(back == host);
  auto sub = c.value()->Split({0}, "self");
  REQUIRE_MESSAGE(sub.ok(), sub.status().ToString());
  CHECK(sub.value()->AllReduceSum(a, n).ok());
  c.value()->Abort("test says stop");
  CHECK(c.value()->AllReduceSum(a, n).code() == Status::Code::kAborted);
  cudaFree(a);
  cudaFree(b);
}

int main(int argc, char** argv) {
  auto info = moerun::kernels::cuda::QueryRuntimeInfo();
  if (!info.NoDeviceReason().empty()) {
    std::printf("SKIPPED: %s; GPU tests run on a machine with a GPU\n",
                info.NoDeviceReason().c_str());
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
