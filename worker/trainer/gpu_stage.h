// The GPU stage (resources.backend: cuda): the StageBackend (worker/trainer/stage_backend.h)
// of one GPU per rank, holding its pipeline stage (the whole model when pipeline is 1;
// worker/model/cuda/model_cuda.h) with weights, gradients and AdamW moments on the device.
// The StepDriver (worker/trainer/step_driver.h) runs it by the same rules as the CPU stage,
// so a job's metrics mean the same on either backend.
// Between stages, activations and their gradients travel over a device communicator across
// the world (NCCL, or host-staged where ranks share a GPU); a stage keeps one micro-batch's
// activations, so the driver runs a micro-batch's forward again before its backward unless
// that was its last forward (docs/gpu.md). Received inputs stay on the device, in as many
// slots as micro-batches in flight.
//
// With expert parallelism a rank holds its share of the routed experts and tokens travel to
// them inside the MoE layers. Each group's device communicator is NCCL, or host-staged where
// ranks share a GPU (worker/comm/device_communicator.h).
//
// Supported: data, pipeline and expert parallelism, in fp32, bf16, or fp8 (bf16 storage,
// DeepSeek-V3's fp8 linear layers; sizes in multiples of 16; TrainerSupport refuses others).
// Declared without CUDA types. CheckGpuTraining, MakeGpuStage and RegisterGpuStep are
// defined only in builds with CUDA, in the moerun-train-gpu program's library
// (worker_trainer_gpu): the `moerun` tool never loads CUDA's libraries (half a second per
// call), and `moerun train` hands a cuda job to moerun-train-gpu.
#pragma once

#include <memory>

#include "common/job_spec.h"
#include "common/status.h"
#include "common/timeouts.h"
#include "worker/comm/timed_communicator.h"
#include "worker/model/parameters.h"
#include "worker/trainer/stage_backend.h"
#include "worker/trainer/topology.h"
#include "worker/trainer/train_state.h"

namespace moerun::trainer {

// Unimplemented (what is missing, and what to use instead) when this job cannot train on
// this machine's GPUs, for a job TrainerSupport accepted: no usable GPU, or fp8 on a GPU other
// than Hopper.
Status CheckGpuTraining(const JobSpec& spec);

struct GpuStepOptions {
  int device = -1;  // CUDA device of this rank; -1: rank mod the visible devices
  int64_t data_plane_timeout_ms = kDataPlaneTimeoutMs;
  // Where NCCL's time is added (the trainer's data-plane wait); may be null.
  std::shared_ptr<comm::DataPlaneWait> wait;
};

// For a job TrainerSupport and CheckGpuTraining accepted. `params` and `opt` hold the state
// to start from (initialized or restored); the stage copies them to the device and writes
// them back on SyncHost. All pointers outlive it.
Result<std::unique_ptr<StageBackend>> MakeGpuStage(const JobSpec& spec, Topology* topo,
                                                   model::Parameters<float>* params,
                                                   OptimizerState* opt,
                                                   const GpuStepOptions& options);

// The GPU step as this process has it: both null unless RegisterGpuStep ran (the trainer
// then refuses cuda jobs, never training them on the CPU).
struct GpuStepHooks {
  Status (*check)(const JobSpec&) = nullptr;
  Result<std::unique_ptr<StageBackend>> (*make)(const JobSpec&, Topology*,
                                                model::Parameters<float>*, OptimizerState*,
                                                const GpuStepOptions&) = nullptr;
};
const GpuStepHooks& LinkedGpuStep();
void SetLinkedGpuStep(const GpuStepHooks& hooks);
// Sets the hooks to CheckGpuTraining and MakeGpuStage (CUDA builds only).
void RegisterGpuStep();

}  // namespace moerun::trainer
