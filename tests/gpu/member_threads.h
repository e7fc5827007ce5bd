// Members of an expert group as threads of one test on one GPU: each gets a ZeroMQ
// communicator over in-process endpoints, wrapped as the host-staged device communicator
// (what ranks sharing a GPU use). A member's body returns "" or what went wrong; a failed
// check inside it (an exception) becomes its error instead of ending the test binary.
#pragma once

#include <cuda_runtime.h>
#include <unistd.h>

#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "worker/comm/device_communicator.h"
#include "worker/comm/zmq_communicator.h"

namespace moerun::gpu_testing {

using MemberBody = std::function<std::string(int member, comm::Communicator& group)>;

// Runs `body` for members 0..members-1 at once; returns each member's error ("" for none).
inline std::vector<std::string> RunMembers(int members, const std::string& name,
                                           const MemberBody& body) {
  std::vector<std::string> endpoints, errors(static_cast<size_t>(members));
  for (int r = 0; r < members; ++r)
    endpoints.push_back("ipc://@moerun-gpu-" + std::to_string(getpid()) + "-" + name + "-" +
                        std::to_string(r));
  std::vector<std::thread> threads;
  for (int m = 0; m < members; ++m) {
    threads.emplace_back([&, m] {
      std::string& err = errors[size_t(m)];
      try {
        if (cudaSetDevice(0) != cudaSuccess) {
          err = "no device";
          return;
        }
        auto zmq = comm::ZmqCommunicator::Create(m, endpoints, 20000);
        if (!zmq.ok()) {
          err = zmq.status().ToString();
          return;
        }
        comm::HostStagedCommunicator group(zmq.value().get());
        err = body(m, group);
        if (!err.empty()) zmq.value()->Abort("member " + std::to_string(m) + " failed: " + err);
      } catch (const std::exception& e) {
        err = std::string("exception: ") + e.what();
      } catch (...) {
        err = "a check failed in this member's thread";
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

}  // namespace moerun::gpu_testing
