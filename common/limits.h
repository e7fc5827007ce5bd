// Size limits and defaults that guard moerun against hostile or broken input. Every limit
// lives here, with its unit in its name.
#pragma once

#include <cstddef>
#include <cstdint>

namespace moerun {

// A job spec is a short hand-written file; anything larger is a mistake (or an attack).
inline constexpr std::size_t kMaxJobSpecBytes = 1 << 20;
// A job spec's values (scalars, lists, maps), and its scalars' bytes (kMaxJobSpecBytes), both
// counted with its aliases expanded (common/spec_expansion.h).
inline constexpr std::uint64_t kMaxJobSpecNodes = 1 << 16;
// ---- the HTTP API (coordinator/http/guarded_server.h) ----
// A request body: a JSON-escaped spec of kMaxJobSpecBytes fits; refused (413) as it arrives,
// never read whole past this.
inline constexpr std::size_t kMaxHttpBodyBytes = 2 << 20;
// A request line or header line, and the request line and headers together.
inline constexpr std::size_t kMaxHttpHeaderLineBytes = 16 << 10;
inline constexpr std::size_t kMaxHttpHeaderBytes = 64 << 10;
// Open connections from one client address, and in all: each has a thread while it is open.
inline constexpr int kMaxHttpConnectionsPerClient = 16;
inline constexpr int kMaxHttpConnections = 256;
// Unread bytes a closing HTTP connection reads and drops (kHttpLingerMs): enough that a client
// streaming a refused body, on a loaded machine, reads its answer before the close.
inline constexpr std::size_t kHttpLingerBytes = 16 << 20;
// Connections the kernel holds for the HTTP server before it accepts them (cpp-httplib listens
// with 5: a burst of connections then waits seconds for SYN retransmits).
inline constexpr int kHttpListenBacklog = 1024;
// A trainer connects to every peer at its start in worlds up to this many ranks (a first step
// then waits for no handshake); larger worlds connect to a peer on their first message to it.
inline constexpr int kDataPlaneEagerConnectRanks = 64;
// Flow-collection nesting ([[[...]]]) deeper than this is rejected before parsing.
inline constexpr int kMaxJobSpecFlowDepth = 32;
// Block nesting (indentation levels) deeper than this is rejected before parsing.
inline constexpr int kMaxJobSpecIndentDepth = 32;
// A file with more errors than this reports the first ones and a count of the rest.
inline constexpr std::size_t kMaxSpecDiagnostics = 100;

// Control-plane messages: the whole encoded envelope, its ids, and its JSON body's nesting.
inline constexpr std::size_t kMaxMessageBytes = 4 << 20;
inline constexpr std::size_t kMaxMessageIdBytes = 256;
inline constexpr int kMaxMessageJsonDepth = 32;
// Pending connections the coordinator's listening socket queues (capped by the kernel's
// net.core.somaxconn). libzmq's default of 100 makes thousands of daemons reconnecting after a
// coordinator restart wait out TCP SYN retries: seconds, then tens of seconds.
inline constexpr int kControlListenBacklog = 4096;

// A log chunk the CLI fetches from a daemon (moerun logs), per request.
inline constexpr std::size_t kLogChunkBytes = 256 << 10;
// Step reports (or expert-load points) one Query returns at most.
inline constexpr std::size_t kMaxMetricsPerQuery = 10000;
// A memory snapshot another rank sends (a replica of its state) at most: 64 GiB.
inline constexpr uint64_t kMaxMemorySnapshotBytes = uint64_t(64) << 30;
// checkpoint.keep at most: the committed steps a CheckpointCommitted message lists.
inline constexpr int64_t kMaxCheckpointKeep = 1000;
// Jobs with memory snapshots a heartbeat names at most (the rest wait for a later one).
inline constexpr std::size_t kMaxMemoryJobsReported = 256;
// The ZeroMQ data plane's messages: payload bytes per chunk, and the kernel socket buffers.
inline constexpr std::size_t kDataPlaneChunkBytes = std::size_t(1) << 20;
inline constexpr int kDataPlaneSocketBufferBytes = 4 << 20;  // SO_SNDBUF / SO_RCVBUF
// cuBLASLt's workspace for the fp8 GEMMs (its suggestion for Hopper).
inline constexpr std::size_t kCublasLtWorkspaceBytes = std::size_t(32) << 20;
// Held-out windows per evaluation during training (the first ones, the same every time).
inline constexpr int64_t kEvalMaxWindows = 32;
// A daemon reports each trainer's newest this-many flight-recorder entries on a hang.
inline constexpr std::size_t kFlightEntriesReported = 16;
// A warm standby trainer's role (common/standby_role.h): its command line and log path.
inline constexpr std::size_t kMaxStandbyRoleBytes = 1 << 20;
// Room a standby keeps in its command line for the role's, so `ps` and /proc/<pid>/cmdline
// show the trainer it became; a longer role command line is cut there.
inline constexpr std::size_t kStandbyTitleBytes = 4096;

}  // namespace moerun
