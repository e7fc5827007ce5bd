// DiagnoseHang: reads the flight recorders of a hung generation's ranks (each rank's last
// data-plane calls, worker/comm/flight_recorder.h, as the daemons report them) and says which
// rank did not arrive and where everyone else waits, for the job's events:
//   "rank 2 did not arrive: ranks 0, 1, 3 wait in all_reduce data/0 #812 (14.9 s); rank 2 is
//    not in the data plane (its last call, all_to_all expert/0/1 #811, ended 14.8 s ago)"
// Group membership is read from the records themselves (ranks that used a group's name).
// Pure function; unit-tested on made-up records (tests/unit/test_hang_diagnosis.cc).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace moerun::coordinator {

// `ranks`: an object from rank ("0", "1", ...) to that rank's entries, oldest first, each as
// FlightEntry::ToJson writes it (op, group, group_seq, age_ms, running or took_ms, ok, peer);
// a call that ended in failure counts as a wait (it timed out or was aborted waiting). A
// rank missing from it had no answer (its daemon is gone, or it never recorded anything).
std::string DiagnoseHang(const nlohmann::json& ranks, int world);

}  // namespace moerun::coordinator
