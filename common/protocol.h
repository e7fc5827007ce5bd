// The control-plane envelope (docs/architecture.md §6): every message between the coordinator,
// worker daemons, trainers and the CLI. Wire format, little-endian:
//
//   "MRUN" | u16 protocol version | u16 type | u64 generation |
//   u16 job-id length | u16 sender length | u32 body length |
//   job id | sender | body (JSON text)
//
// Decoding never throws and never trusts a length: anything too large, truncated, of another
// protocol version, of an unknown type, or with a body that is not a JSON object (or nests
// deeper than kMaxMessageJsonDepth) is rejected with a Status that says why. Thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/status.h"

namespace moerun {

inline constexpr uint16_t kProtocolVersion = 1;

// Add types at the end; never renumber (old messages must stay readable or be refused).
enum class MessageType : uint16_t {
  kRegister = 1,       // daemon -> coordinator: host, devices, backend
  kRegistered = 2,     // coordinator -> daemon: accepted, heartbeat settings
  kHeartbeat = 3,      // daemon -> coordinator: alive, trainer states
  kStartTrainers = 4,  // coordinator -> daemon: ranks to start for a job generation
  kStopTrainers = 5,   // coordinator -> daemon: stop a job's trainers (fencing)
  kTrainerExited = 6,  // daemon -> coordinator: exit code or signal of a trainer
  kRendezvous = 7,     // trainer <-> coordinator: endpoints of a generation
  kStepReport = 8,     // trainer -> coordinator: per-step metrics
  kShardWritten = 9,   // trainer -> coordinator: a checkpoint shard is durable
  kSubmitJob = 10,     // CLI -> coordinator
  kCancelJob = 11,     // CLI -> coordinator
  kQuery = 12,         // CLI -> coordinator: status, events, logs
  kReply = 13,         // coordinator -> CLI or daemon: the answer to a request
  kError = 14,         // either way: a request failed, with the reason
  // coordinator -> trainer: the committed checkpoint steps the job keeps (a writer rank deletes
  // none of these, nor any step newer than the newest of them)
  kCheckpointCommitted = 15,
  // CLI -> coordinator: forget a daemon that will not return (job_id: the worker's id)
  kRemoveWorker = 16,
  // CLI -> coordinator: end a job after its trainers checkpoint the step they are in
  // (`moerun stop`, Slurm's warning before a preemption or the time limit); body {reason}.
  // Then coordinator -> trainer: stop after a checkpoint.
  kStopJob = 17,
  // trainer -> coordinator: a rank's pre-flight, its GEMM speed and its two pairings' links
  kPreflightReport = 18,
};
inline constexpr uint16_t kMaxMessageType = 18;

std::string_view ToString(MessageType t);

struct Envelope {
  MessageType type = MessageType::kError;
  uint64_t generation = 0;  // of the job the message is about; 0 when none
  std::string job_id;       // empty when not about a job
  std::string sender;       // daemon id, "trainer:<job>:<rank>", "cli", "coordinator"
  nlohmann::json body = nlohmann::json::object();
};

// Fails when an id is too long or the encoded message would exceed kMaxMessageBytes.
Result<std::string> EncodeEnvelope(const Envelope& e);
Result<Envelope> DecodeEnvelope(std::string_view bytes);

}  // namespace moerun
