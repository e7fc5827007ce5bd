// Daemon identity in the coordinator: one daemon per id (a second one from another home is
// refused, by its own route, and the first keeps working), a relaunch on the same home takes
// over, messages go to the registered route, and a dead daemon is removed on request or after
// --forget-dead-workers-after-ms.
#include <doctest/doctest.h>

#include "tests/unit/coordinator_harness.h"

namespace moerun::coordinator {
namespace {

void Register(Harness& h, const std::string& route, const std::string& home, int64_t pid) {
  h.c().Handle(route, {MessageType::kRegister,
                       0,
                       "",
                       route,
                       {{"host", "vm"},
                        {"devices", 2},
                        {"backend", "cpu"},
                        {"data_host", "127.0.0.1"},
                        {"pid", pid},
                        {"home", home},
                        {"trainers", json::array()}}});
}

}  // namespace

TEST_CASE("a second daemon with a live daemon's id is refused; a relaunch on its home is not") {
  Harness h("identity");
  Register(h, "worker:vm#1", "vm:/var/lib/a", 100);
  CHECK(h.Last("worker:vm#1").e.type == MessageType::kRegistered);
  Register(h, "worker:vm#2", "vm:/tmp/b", 200);
  const Sent refusal = h.Last("worker:vm#2");
  CHECK(refusal.e.type == MessageType::kError);
  CHECK(refusal.e.body.value("duplicate_id", false));
  const std::string why = refusal.e.body.value("error", "");
  CHECK(why.find("worker id vm is in use by the daemon at vm:/var/lib/a (pid 100") == 0);
  CHECK(why.find("needs another --id") != std::string::npos);
  CHECK(h.c().workers().Find("vm")->route == "worker:vm#1");
  // Work still goes to the first daemon's route.
  const std::string job = h.Submit("small")["job_id"];
  CHECK(h.Count(MessageType::kStartTrainers, "worker:vm#1") == 1);
  CHECK(h.Count(MessageType::kStartTrainers, "worker:vm#2") == 0);
  // Relaunched on the same state dir (a new pid, the same home): it takes over.
  Register(h, "worker:vm#1", "vm:/var/lib/a", 300);
  CHECK(h.Last("worker:vm#1").e.type == MessageType::kRegistered);
  CHECK(h.c().workers().Find("vm")->pid == 300);
  (void)job;
}

TEST_CASE("a dead daemon is removed on request, or forgotten after an hour") {
  Harness h("forget");
  Register(h, "worker:vm#1", "vm:/a", 100);
  h.c().Handle("cli:1", {MessageType::kRemoveWorker, 0, "vm", "cli", json::object()});
  CHECK(h.Last("cli:1").e.type == MessageType::kError);
  CHECK(h.Last("cli:1").e.body.value("error", "").find("is alive") != std::string::npos);
  h.timer.AdvanceMs(6000);  // past the 5 s heartbeat timeout
  h.c().Tick();
  REQUIRE_FALSE(h.c().workers().Find("vm")->alive);
  h.c().Handle("cli:2", {MessageType::kRemoveWorker, 0, "vm", "cli", json::object()});
  CHECK(h.Last("cli:2").e.type == MessageType::kReply);
  CHECK(h.c().workers().Find("vm") == nullptr);
  h.c().Handle("cli:3", {MessageType::kRemoveWorker, 0, "vm", "cli", json::object()});
  CHECK(h.Last("cli:3").e.body.value("error", "").find("no worker vm") == 0);

  Register(h, "worker:ghost#1", "ghost:/a", 100);
  h.timer.AdvanceMs(6000);
  h.c().Tick();
  REQUIRE(h.c().workers().Find("ghost") != nullptr);  // dead, still shown
  h.timer.AdvanceMs(kForgetDeadWorkerMs);
  h.c().Tick();
  CHECK(h.c().workers().Find("ghost") == nullptr);
  // Forgotten in the store too: a restarted coordinator does not bring it back.
  h.Reopen();
  CHECK(h.c().workers().Find("ghost") == nullptr);
}

}  // namespace moerun::coordinator
