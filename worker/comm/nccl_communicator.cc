#include "worker/comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <thread>

#include "kernels/cuda/cuda_status.h"

namespace moerun::comm {

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0;
  float* scratch = nullptr;  // one float on the device, for Barrier
  bool aborted = false;
};

namespace {

ncclConfig_t NonBlockingConfig() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

std::string NcclError(ncclResult_t r) { return ncclGetErrorString(r); }

}  // namespace

NcclCommunicator::NcclCommunicator(std::unique_ptr<State> state, int rank, int size,
                                   int64_t timeout_ms)
    : state_(std::move(state)), rank_(rank), size_(size), timeout_ms_(timeout_ms) {}

NcclCommunicator::~NcclCommunicator() {
  if (!state_) return;
  cudaSetDevice(state_->device);
  if (state_->comm != nullptr) {
    if (state_->aborted) {
      ncclCommAbort(state_->comm);
    } else {
      ncclCommFinalize(state_->comm);
      ncclResult_t r = ncclInProgress;
      while (ncclCommGetAsyncError(state_->comm, &r) == ncclSuccess && r == ncclInProgress) {
        std::this_thread::sleep_for(std::chrono::microseconds(kNcclPollUs));
      }
      ncclCommDestroy(state_->comm);
    }
  }
  if (state_->scratch != nullptr) cudaFree(state_->scratch);
  if (state_->stream != nullptr) cudaStreamDestroy(state_->stream);
}

Result<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(Communicator* bootstrap,
                                                                   int device, int64_t timeout_ms) {
  auto state = std::make_unique<State>();
  state->device = device;
  MOERUN_RETURN_IF_ERROR(
      kernels::cuda::CudaStatus(cudaSetDevice(device), "NCCL: device " + std::to_string(device)));
  if (cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking) != cudaSuccess ||
      cudaMalloc(&state->scratch, sizeof(float)) != cudaSuccess) {
    return Status::Unavailable("NCCL: cannot create a stream or scratch buffer on device " +
                               std::to_string(device));
  }
  ncclUniqueId id;
  if (bootstrap->rank() == 0) {
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess)
      return Status::Unavailable("NCCL: " + NcclError(r));
  }
  MOERUN_RETURN_IF_ERROR(bootstrap->Broadcast(0, &id, sizeof id));
  ncclConfig_t config = NonBlockingConfig();
  const int rank = bootstrap->rank(), size = bootstrap->size();
  ncclResult_t r = ncclCommInitRankConfig(&state->comm, size, id, rank, &config);
  std::unique_ptr<NcclCommunicator> c(
      new NcclCommunicator(std::move(state), rank, size, timeout_ms));
  MOERUN_RETURN_IF_ERROR(c->Enqueued(r, "init"));
  MOERUN_RETURN_IF_ERROR(c->Wait("init"));
  return c;
}

void NcclCommunicator::Abort(const std::string& reason) {
  if (abort_requested_.exchange(true)) return;
  abort_reason_ = reason;  // read only by the calling thread after it sees the flag
}

Status NcclCommunicator::Enqueued(int nccl_result, const char* what) {
  const auto r = static_cast<ncclResult_t>(nccl_result);
  if (r == ncclSuccess || r == ncclInProgress) return Status::OK();
  state_->aborted = true;
  ncclCommAbort(state_->comm);
  state_->comm = nullptr;
  return Status::Unavailable(std::string("NCCL ") + what + ": " + NcclError(r));
}

Status NcclCommunicator::Wait(const char* what) {
  if (state_->comm == nullptr)
    return Status::Aborted(std::string("NCCL ") + what + ": communicator aborted");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms_);
  while (true) {
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(state_->comm, &async);
    const cudaError_t q = cudaStreamQuery(state_->stream);
    if (async == ncclSuccess && q == cudaSuccess) return Status::OK();
    Status failure;
    if (async != ncclSuccess && async != ncclInProgress) {
      failure = Status::Unavailable(std::string("NCCL ") + what + ": " + NcclError(async));
    } else if (q != cudaSuccess && q != cudaErrorNotReady) {
      failure = kernels::cuda::CudaStatus(q, std::string("NCCL ") + what);
    } else if (abort_requested_.load()) {
      failure = Status::Aborted("data plane aborted: " + abort_reason_);
    } else if (std::chrono::steady_clock::now() > deadline) {
      failure = Status::TimedOut(std::string("NCCL ") + what + ": not finished after " +
                                 std::to_string(timeout_ms_) +
                                 " ms; a peer is dead, frozen or partitioned");
    }
    if (!failure.ok()) {
      state_->aborted = true;
      ncclCommAbort(state_->comm);  // unblocks the kernels still waiting for peers
      state_->comm = nullptr;
      return failure;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(kNcclPollUs));
  }
}

Status NcclCommunicator::Send(int peer, uint32_t, const void* data, size_t bytes) {
  if (state_->comm == nullptr) return Status::Aborted("NCCL send: communicator aborted");
  MOERUN_RETURN_IF_ERROR(
      Enqueued(ncclSend(data, bytes, ncclUint8, peer, state_->comm, state_->stream), "send"));
  return Wait("send");
}

Status NcclCommunicator::Recv(int peer, uint32_t, void* data, size_t bytes) {
  if (state_->comm == nullptr) return Status::Aborted("NCCL recv: communicator aborted");
  MOERUN_RETURN_IF_ERROR(
      Enqueued(ncclRecv(data, bytes, ncclUint8, peer, state_->comm, state_->stream), "recv"));
  return Wait("recv");
}

Status NcclCommunicator::SendRecv(int send_peer, uint32_t, const void* send, size_t send_bytes,
                                  int recv_peer, uint32_t, void* recv, size_t recv_bytes) {
  if (state_->comm == nullptr) return Status::Aborted("NCCL sendrecv: communicator aborted");
  ncclGroupStart();
  ncclSend(send, send_bytes, ncclUint8, send_peer, state_->comm, state_->stream);
  ncclRecv(recv, recv_bytes, ncclUint8, recv_peer, state_->comm, state_->stream);
  MOERUN_RETURN_IF_ERROR(Enqueued(ncclGroupEnd(), "sendrecv"));
  return Wait("sendrecv");
}

namespace {

// One all-reduce of `count` elements of `type`, in place.
ncclResult_t EnqueueSum(void* data, size_t count, ncclDataType_t type, ncclComm_t comm,
                        cudaStream_t stream) {
  return ncclAllReduce(data, data, count, type, ncclSum, comm, stream);
}

}  // namespace

Status NcclCommunicator::AllReduceSum(float* data, size_t count) {
  if (state_->comm == nullptr) return Status::Aborted("NCCL all-reduce: communicator aborted");
  MOERUN_RETURN_IF_ERROR(
      Enqueued(EnqueueSum(data, count, ncclFloat32, state_->comm, state_->stream), "all-reduce"));
  return Wait("all-reduce");
}

Status NcclCommunicator::AllReduceSum(double* data, size_t count) {
  if (state_->comm == nullptr) return Status::Aborted("NCCL all-reduce: communicator aborted");
  MOERUN_RETURN_IF_ERROR(
      Enqueued(EnqueueSum(data, count, ncclFloat64, state_->comm, state_->stream), "all-reduce"));
  return Wait("all-reduce");
}

Status NcclCommunicator::AllToAllV(const void* send, const std::vector<size_t>& send_bytes,
                                   void* recv, const std::vector<size_t>& recv_bytes) {
  if (state_->comm == nullptr) return Status::Aborted("NCCL alltoallv: communicator aborted");
  if (int(send_bytes.size()) != size_ || int(recv_bytes.size()) != size_) {
    return Status::InvalidArgument("alltoallv: split vectors must have one entry per member");
  }
  const auto* s = static_cast<const uint8_t*>(send);
  auto* r = static_cast<uint8_t*>(recv);
  size_t so = 0, ro = 0;
  ncclGroupStart();
  for (int j = 0; j < size_; ++j) {
    if (send_bytes[size_t(j)] > 0)
      ncclSend(s + so, send_bytes[size_t(j)], ncclUint8, j, state_->comm, state_->stream);
    if (recv_bytes[size_t(j)] > 0)
      ncclRecv(r + ro, recv_bytes[size_t(j)], ncclUint8, j, state_->comm, state_->stream);
    so += send_bytes[size_t(j)];
    ro += recv_bytes[size_t(j)];
  }
  MOERUN_RETURN_IF_ERROR(Enqueued(ncclGroupEnd(), "alltoallv"));
  return Wait("alltoallv");
}

Status NcclCommunicator::Broadcast(int root, void* data, size_t bytes) {
  if (state_->comm == nullptr) return Status::Aborted("NCCL broadcast: communicator aborted");
  MOERUN_RETURN_IF_ERROR(
      Enqueued(ncclBroadcast(data, data, bytes, ncclUint8, root, state_->comm, state_->stream),
               "broadcast"));
  return Wait("broadcast");
}

Status NcclCommunicator::Barrier() { return AllReduceSum(state_->scratch, 1); }

Result<std::unique_ptr<Communicator>> NcclCommunicator::Split(const std::vector<int>& members,
                                                              const std::string& name) {
  if (state_->comm == nullptr) return Status::Aborted("NCCL split: communicator aborted");
  int key = -1;
  for (size_t i = 0; i < members.size(); ++i)
    if (members[i] == rank_) key = int(i);
  if (key < 0) return Status::InvalidArgument("split '" + name + "': this rank is not a member");
  // Members of one group pass the same name, so they derive the same colour.
  uint32_t color = 2166136261u;
  for (unsigned char ch : name) color = (color ^ ch) * 16777619u;
  auto state = std::make_unique<State>();
  state->device = state_->device;
  if (cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking) != cudaSuccess ||
      cudaMalloc(&state->scratch, sizeof(float)) != cudaSuccess) {
    return Status::Unavailable("NCCL split: cannot create a stream or scratch buffer");
  }
  ncclConfig_t config = NonBlockingConfig();
  ncclResult_t r = ncclCommSplit(state_->comm, int(color & 0x7fffffff), key, &state->comm, &config);
  MOERUN_RETURN_IF_ERROR(Enqueued(r, "split"));
  MOERUN_RETURN_IF_ERROR(Wait("split"));
  std::unique_ptr<NcclCommunicator> c(
      new NcclCommunicator(std::move(state), key, int(members.size()), timeout_ms_));
  MOERUN_RETURN_IF_ERROR(c->Wait("split"));
  return std::unique_ptr<Communicator>(std::move(c));
}

}  // namespace moerun::comm
