// ZmqTransport: the sockets under ZeroMQ communicators, one per process. Each rank binds one
// PULL socket at its endpoint (ipc:// on one host, tcp:// across hosts) and connects a PUSH
// socket to each peer on first use. A payload travels as chunks of at most kChunkBytes, each
// its own two-frame ZeroMQ message: a fixed header (format version, group id, source rank,
// tag, total length, offset) and the chunk. Separate messages let the receiver copy one chunk
// while the next is in flight: 1 MiB chunks move about four times faster here than one
// multipart message or one 32 MiB frame.
//
// Receiving pulls frames from the socket until the wanted (group, source, tag) arrives,
// parking others in a mailbox, so collectives of different groups may interleave. Waiting
// is sliced (kDataPlanePollSliceMs) so Abort() from another thread takes effect promptly.
// Not thread-safe except Abort().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>
#include <zmq.hpp>

#include "common/curve_auth.h"
#include "common/limits.h"
#include "common/status.h"
#include "common/timeouts.h"

namespace moerun::comm {

inline constexpr uint16_t kWireVersion = 1;

// A generation's data-plane key (Z85 CURVE key pair), handed to its ranks by their daemons
// (docs/control-plane.md, "The data plane"). Every rank's PULL socket is a CURVE server with
// this secret key behind a ZAP handler that admits only this public key, and every PUSH socket
// a CURVE client with this pair: only a process that holds the pair connects, and every frame
// is encrypted.
struct DataPlaneKey {
  std::string public_key, secret_key;
};

class ZmqTransport {
 public:
  // endpoints[r] is world rank r's address; this process is `rank`. key: the generation's
  // data-plane key; none for plain TCP/IPC (a trusted fabric, `moerun launch`).
  static Result<std::shared_ptr<ZmqTransport>> Create(int rank, std::vector<std::string> endpoints,
                                                      std::optional<DataPlaneKey> key = {});
  ~ZmqTransport();

  // Where this rank listens. An endpoint bound with a wildcard port (tcp://host:*) is
  // resolved to the port it got, so a trainer can report it at the rendezvous.
  const std::string& local_endpoint() const { return endpoints_[size_t(rank_)]; }
  // The peers' addresses, learned at the rendezvous; call before the first Send. The table
  // must have this world's size and list local_endpoint() at this rank.
  Status SetEndpoints(std::vector<std::string> endpoints);

  // Starts connecting to every peer now (the handshakes, CURVE's included, run on libzmq's I/O
  // thread while the caller restores its state) instead of on each peer's first message, for
  // worlds of at most kDataPlaneEagerConnectRanks; larger worlds connect on first use.
  void ConnectPeers();

  int rank() const { return rank_; }
  int world_size() const { return int(endpoints_.size()); }

  Status Send(uint32_t group, int dest, uint64_t tag, const void* data, size_t bytes);
  // Receives the next message of (group, src, tag) into data (exactly `bytes`), waiting until
  // `deadline`.
  Status Recv(uint32_t group, int src, uint64_t tag, void* data, size_t bytes,
              std::chrono::steady_clock::time_point deadline);

  void Abort(const std::string& reason);
  bool aborted() const { return aborted_.load(); }

  // Messages dropped because their header could not be read.
  uint64_t malformed() const { return malformed_; }
  // Connections refused because they did not hold the generation's key (0 without one); cb,
  // on the ZAP handler's thread, hears of each with the peer's address and key.
  uint64_t refused() const;
  void OnRefused(std::function<void(const std::string& address, const std::string& key)> cb);

 private:
  ZmqTransport(int rank, std::vector<std::string> endpoints);
  Status AbortedStatus() const;
  zmq::socket_t& PeerSocket(int dest);

  using Key = std::tuple<uint32_t, int, uint64_t>;  // group, source, tag
  int rank_;
  std::vector<std::string> endpoints_;
  zmq::context_t ctx_;
  zmq::socket_t pull_;
  std::vector<std::unique_ptr<zmq::socket_t>> push_;
  struct Pending {                       // one message, complete when have == total
    std::vector<zmq::message_t> chunks;  // not yet placed in a receiver's buffer
    uint64_t have = 0, total = 0;
    bool lost = false;  // partly placed into the buffer of a receive that then failed
  };
  std::map<Key, std::deque<Pending>> mailbox_;
  std::optional<DataPlaneKey> key_;
  std::unique_ptr<ZapAuthenticator> zap_;  // with key_: admits only its public key
  std::atomic<bool> aborted_{false};
  bool timed_out_ = false;  // a Recv timed out: some peer is gone, do not linger for it
  mutable std::mutex abort_mu_;
  std::string abort_reason_;
  uint64_t malformed_ = 0;
};

}  // namespace moerun::comm
