// GuardedServer: cpp-httplib's Server with the limits a coordinator facing careless or hostile
// clients needs (docs/control-plane.md, "HTTP API"). cpp-httplib reads each connection on a
// pool thread with a timeout per read, so eight idle connections held its eight threads, a
// request line without an end grew without bound, and an over-long body was read to its end.
// Here, on each connection:
//  - admission first (ClientGate): at most kMaxHttpConnectionsPerClient from one address and
//    kMaxHttpConnections in all; one over is answered 429 or 503 (JSON) and closed;
//  - a thread of its own (the pool grows to kMaxHttpConnections), so slow clients cannot
//    queue up everyone else;
//  - kHttpIdleTimeoutMs for a request to begin, kHttpRequestReadTimeoutMs for all of it to
//    arrive, kHttpWriteTimeoutMs for the answer to leave;
//  - a RequestBudget per request: header lines, headers and body bounded as they arrive.
// Requests are then cpp-httplib's: routing, handlers, keep-alive (up to its max count).
// Thread-safe as httplib::Server is; the gate is shared by the connection threads.
#pragma once

#include <httplib.h>

#include "coordinator/http/client_gate.h"

namespace moerun::coordinator {

class GuardedServer : public httplib::Server {
 public:
  GuardedServer();
  const ClientGate& gate() const { return gate_; }
  // Once stop() was called: every connection's wait ends within kHttpStopPollMs.
  bool stopping() const { return svr_sock_ == INVALID_SOCKET; }
  // Serves one connected socket on the calling thread as an accepted connection is served,
  // then closes it; for a server that was never bound (tests, the fuzz target). No stop()
  // ends it early.
  void ServeConnection(int sock) { Serve(sock, /*watch_stop=*/false); }
  // After a bind: listens with kHttpListenBacklog instead of cpp-httplib's 5 (Linux lets a
  // listening socket change its backlog).
  bool RaiseBacklog();

 private:
  bool process_and_close_socket(socket_t sock) override;
  void Serve(int sock, bool watch_stop);

  ClientGate gate_;
};

}  // namespace moerun::coordinator
