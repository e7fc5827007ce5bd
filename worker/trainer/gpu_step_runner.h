// The GPU step (resources.backend: cuda): one GPU per rank, holding its pipeline stage (the
// whole model when pipeline is 1; worker/model/cuda/model_cuda.h). A step runs the rank's
// micro-batches forward and backward through its stage in the job's schedule
// (worker/trainer/pipeline_schedule.h) with gradients accumulating on the device, sums the
// stage's expert token counts over the data group and updates the balancing biases from
// them, sums gradients on the device (below), then clips by the
// global norm and applies AdamW on the device. The data order, learning-rate schedule, loss
// and load accounting are the CPU StepRunner's, so a job's metrics mean the same on either
// backend.
// Between stages, activations and their gradients travel over a device communicator across
// the world (NCCL, or host-staged where ranks share a GPU), sends paired with the next
// receive by a StageLink so that 1F1B cannot deadlock; a stage keeps one micro-batch's
// activations and runs a micro-batch's forward again before its backward unless that was its
// last forward (docs/gpu.md).
//
// With expert parallelism a rank holds its share of the routed experts and tokens travel to
// them inside the MoE layers; dense gradients are summed over the data group, the experts'
// over the expert replica group. Each group's device communicator is NCCL, or host-staged
// where ranks share a GPU (worker/comm/device_communicator.h).
//
// Supported: data, pipeline and expert parallelism, in fp32, bf16, or fp8 (bf16 storage,
// DeepSeek-V3's fp8 linear layers; sizes in multiples of 16; TrainerSupport refuses others).
// Declared without CUDA types. CheckGpuTraining, MakeGpuStepRunner and RegisterGpuStep are
// defined only in builds with CUDA, in the moerun-train-gpu program's library
// (worker_trainer_gpu): the `moerun` tool never loads CUDA's libraries (half a second per
// call), and `moerun train` hands a cuda job to moerun-train-gpu.
#pragma once

#include <memory>

#include "common/job_spec.h"
#include "common/status.h"
#include "worker/comm/timed_communicator.h"
#include "worker/data/corpus.h"
#include "worker/model/parameters.h"
#include "worker/trainer/step_engine.h"
#include "worker/trainer/topology.h"
#include "worker/trainer/train_state.h"

namespace moerun::trainer {

// Unimplemented (what is missing, and what to use instead) when this job cannot train on
// this machine's GPUs, for a job TrainerSupport accepted: no usable GPU, or fp8 on a GPU other
// than Hopper.
Status CheckGpuTraining(const JobSpec& spec);

struct GpuStepOptions {
  int device = -1;  // CUDA device of this rank; -1: rank mod the visible devices
  int64_t data_plane_timeout_ms = 30000;
  // Where NCCL's time is added (the trainer's data-plane wait); may be null.
  std::shared_ptr<comm::DataPlaneWait> wait;
};

// For a job TrainerSupport and CheckGpuTraining accepted. `params` and `opt` hold the state
// to start from (initialized or restored); the engine copies them to the device and writes
// them back on SyncHost. All pointers outlive it.
Result<std::unique_ptr<StepEngine>> MakeGpuStepRunner(const JobSpec& spec, Topology* topo,
                                                      model::Parameters<float>* params,
                                                      OptimizerState* opt,
                                                      const data::Corpus* corpus,
                                                      const GpuStepOptions& options);

// The GPU step as this process has it: both null unless RegisterGpuStep ran (the trainer
// then refuses cuda jobs, never training them on the CPU).
struct GpuStepHooks {
  Status (*check)(const JobSpec&) = nullptr;
  Result<std::unique_ptr<StepEngine>> (*make)(const JobSpec&, Topology*, model::Parameters<float>*,
                                              OptimizerState*, const data::Corpus*,
                                              const GpuStepOptions&) = nullptr;
};
const GpuStepHooks& LinkedGpuStep();
void SetLinkedGpuStep(const GpuStepHooks& hooks);
// Sets the hooks to CheckGpuTraining and MakeGpuStepRunner (CUDA builds only).
void RegisterGpuStep();

}  // namespace moerun::trainer
