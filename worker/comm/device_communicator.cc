#include "worker/comm/device_communicator.h"

#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <set>

#include "kernels/cuda/cuda_status.h"
#include "worker/comm/nccl_communicator.h"

namespace moerun::comm {
namespace {

// kernels/cuda/cuda_status.h decides each error's code.
Status Cuda(cudaError_t e, const char* what) {
  return kernels::cuda::CudaStatus(e, std::string("host-staged data plane: ") + what);
}

size_t Total(const std::vector<size_t>& v) {
  return std::accumulate(v.begin(), v.end(), size_t{0});
}

}  // namespace

HostStagedCommunicator::~HostStagedCommunicator() {
  for (uint8_t* p : staging_)
    if (p != nullptr) cudaFreeHost(p);
}

Result<uint8_t*> HostStagedCommunicator::Staging(int which, size_t bytes) {
  if (bytes > capacity_[which]) {
    if (staging_[which] != nullptr) cudaFreeHost(staging_[which]);
    staging_[which] = nullptr;
    capacity_[which] = 0;
    const size_t want = std::max(bytes, bytes / 4 * 5);  // room to grow a little
    void* p = nullptr;
    MOERUN_RETURN_IF_ERROR(Cuda(cudaMallocHost(&p, want), "pinned staging"));
    staging_[which] = static_cast<uint8_t*>(p);
    capacity_[which] = want;
  }
  return staging_[which];
}

Status HostStagedCommunicator::ToHost(void* host, const void* device, size_t bytes) {
  if (bytes == 0) return Status::OK();
  return Cuda(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost), "copy to the host");
}

Status HostStagedCommunicator::ToDevice(void* device, const void* host, size_t bytes) {
  if (bytes == 0) return Status::OK();
  return Cuda(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice), "copy to the device");
}

Status HostStagedCommunicator::Send(int peer, uint32_t tag, const void* data, size_t bytes) {
  auto s = Staging(0, bytes);
  if (!s.ok()) return s.status();
  MOERUN_RETURN_IF_ERROR(ToHost(s.value(), data, bytes));
  return host_->Send(peer, tag, s.value(), bytes);
}

Status HostStagedCommunicator::Recv(int peer, uint32_t tag, void* data, size_t bytes) {
  auto s = Staging(1, bytes);
  if (!s.ok()) return s.status();
  MOERUN_RETURN_IF_ERROR(host_->Recv(peer, tag, s.value(), bytes));
  return ToDevice(data, s.value(), bytes);
}

Status HostStagedCommunicator::SendRecv(int send_peer, uint32_t send_tag, const void* send,
                                        size_t send_bytes, int recv_peer, uint32_t recv_tag,
                                        void* recv, size_t recv_bytes) {
  auto s = Staging(0, send_bytes);
  if (!s.ok()) return s.status();
  auto r = Staging(1, recv_bytes);
  if (!r.ok()) return r.status();
  MOERUN_RETURN_IF_ERROR(ToHost(s.value(), send, send_bytes));
  MOERUN_RETURN_IF_ERROR(host_->SendRecv(send_peer, send_tag, s.value(), send_bytes, recv_peer,
                                         recv_tag, r.value(), recv_bytes));
  return ToDevice(recv, r.value(), recv_bytes);
}

template <typename V>
Status HostStagedCommunicator::StagedAllReduce(V* data, size_t count) {
  auto s = Staging(0, count * sizeof(V));
  if (!s.ok()) return s.status();
  V* h = reinterpret_cast<V*>(s.value());
  MOERUN_RETURN_IF_ERROR(ToHost(h, data, count * sizeof(V)));
  MOERUN_RETURN_IF_ERROR(host_->AllReduceSum(h, count));
  return ToDevice(data, h, count * sizeof(V));
}

Status HostStagedCommunicator::AllReduceSum(float* data, size_t count) {
  return StagedAllReduce(data, count);
}

Status HostStagedCommunicator::AllReduceSum(double* data, size_t count) {
  return StagedAllReduce(data, count);
}

Status HostStagedCommunicator::AllToAllV(const void* send, const std::vector<size_t>& send_bytes,
                                         void* recv, const std::vector<size_t>& recv_bytes) {
  const size_t out = Total(send_bytes), in = Total(recv_bytes);
  auto s = Staging(0, out);
  if (!s.ok()) return s.status();
  auto r = Staging(1, in);
  if (!r.ok()) return r.status();
  MOERUN_RETURN_IF_ERROR(ToHost(s.value(), send, out));
  MOERUN_RETURN_IF_ERROR(host_->AllToAllV(s.value(), send_bytes, r.value(), recv_bytes));
  return ToDevice(recv, r.value(), in);
}

Status HostStagedCommunicator::Broadcast(int root, void* data, size_t bytes) {
  auto s = Staging(0, bytes);
  if (!s.ok()) return s.status();
  if (rank() == root) MOERUN_RETURN_IF_ERROR(ToHost(s.value(), data, bytes));
  MOERUN_RETURN_IF_ERROR(host_->Broadcast(root, s.value(), bytes));
  return rank() == root ? Status::OK() : ToDevice(data, s.value(), bytes);
}

Result<std::unique_ptr<Communicator>> HostStagedCommunicator::Split(const std::vector<int>&,
                                                                    const std::string& name) {
  return Status::Unimplemented("host-staged data plane: no Split (" + name +
                               "): make a device communicator over a split of the host group");
}

Result<std::unique_ptr<Communicator>> MakeDeviceCommunicator(Communicator* host_group, int device,
                                                             int64_t timeout_ms,
                                                             std::shared_ptr<DataPlaneWait> wait,
                                                             const std::string& what,
                                                             std::string* transport) {
  // Every member's GPU (host name and PCI bus id: two processes seeing one GPU under
  // different ordinals still match), gathered by a sum over one-hot slots; the 52-bit FNV-1a
  // keys are exact in doubles.
  char name[256] = {0}, bus[64] = {0};
  gethostname(name, sizeof(name) - 1);
  if (cudaDeviceGetPCIBusId(bus, sizeof(bus), device) != cudaSuccess)
    std::snprintf(bus, sizeof(bus), "ordinal-%d", device);
  uint64_t h = 1469598103934665603ull;
  for (const std::string& part : {std::string(name), std::string("/"), std::string(bus)})
    for (unsigned char c : part) h = (h ^ c) * 1099511628211ull;
  std::vector<double> keys(size_t(host_group->size()), 0.0);
  keys[size_t(host_group->rank())] = double(h >> 12) + 1.0;
  MOERUN_RETURN_IF_ERROR(host_group->AllReduceSum(keys.data(), keys.size()));
  const bool distinct = std::set<double>(keys.begin(), keys.end()).size() == keys.size();
  if (!distinct) {
    *transport = "host-staged";
    return std::unique_ptr<Communicator>(std::make_unique<HostStagedCommunicator>(host_group));
  }
  auto nccl = NcclCommunicator::Create(host_group, device, timeout_ms);
  if (!nccl.ok()) return nccl.status().WithContext("NCCL over the " + what);
  std::unique_ptr<Communicator> c = std::move(nccl.value());
  if (wait) c = std::make_unique<TimedCommunicator>(std::move(c), wait);
  *transport = "nccl";
  return c;
}

}  // namespace moerun::comm
