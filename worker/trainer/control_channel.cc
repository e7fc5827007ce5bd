#include "worker/trainer/control_channel.h"

#include <chrono>

#include "common/control_socket.h"
#include "common/message_bodies.h"
#include "common/timeouts.h"

namespace moerun::trainer {

ControlChannel::~ControlChannel() { dealer_.reset(); }

Result<std::unique_ptr<ControlChannel>> ControlChannel::Connect(const ControlChannelOptions& o) {
  auto keys = LoadClientKeys(o.keys_dir);
  if (!keys.ok()) return keys.status();
  std::unique_ptr<ControlChannel> c(new ControlChannel());
  c->opts_ = o;
  const std::string id =
      "trainer:" + o.job_id + ":" + std::to_string(o.generation) + ":" + std::to_string(o.rank);
  auto dealer = ConnectDealer(c->ctx_, keys.value(), {o.address, id, /*immediate=*/true});
  if (!dealer.ok()) return dealer.status();
  c->dealer_ = std::move(dealer.value());
  return c;
}

Result<std::vector<std::string>> ControlChannel::Rendezvous(const std::string& endpoint,
                                                            int64_t timeout_ms) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  const Envelope ask{MessageType::kRendezvous,
                     opts_.generation,
                     opts_.job_id,
                     "trainer",
                     {{"rank", opts_.rank}, {"endpoint", endpoint}}};
  auto next_ask = Clock::now();
  while (Clock::now() < deadline) {
    if (Clock::now() >= next_ask) {
      auto sent = SendEnvelope(*dealer_, ask);
      if (!sent.ok()) return sent.status();
      // Not sent: the connection is still coming up (the CURVE handshake), so try again
      // soon rather than a whole retry period later.
      next_ask = Clock::now() +
                 std::chrono::milliseconds(sent.value() ? kRendezvousRetryMs : kRendezvousResendMs);
    }
    auto msg = ReceiveEnvelope(*dealer_, 50);
    if (!msg.ok() || !msg->has_value()) continue;
    const Envelope& e = **msg;
    if (e.type == MessageType::kError) {
      return Status::Aborted("the coordinator refused the rendezvous: " +
                             e.body.value("error", std::string("?")));
    }
    if (e.type != MessageType::kRendezvous || e.generation != opts_.generation) continue;
    const auto& list = e.body.value("endpoints", nlohmann::json::array());
    std::vector<std::string> table;
    for (const auto& ep : list) {
      if (!ep.is_string()) return Status::InvalidArgument("rendezvous: a non-string endpoint");
      table.push_back(ep.get<std::string>());
    }
    return table;
  }
  return Status::TimedOut("no rendezvous table from the coordinator at " + opts_.address +
                          " within " + std::to_string(timeout_ms) + " ms");
}

void ControlChannel::ReportStep(const nlohmann::json& report) {
  nlohmann::json body = report;
  body["rank"] = opts_.rank;
  (void)SendEnvelope(*dealer_,
                     {MessageType::kStepReport, opts_.generation, opts_.job_id, "trainer", body});
  if (!last_shard_.is_null()) {
    (void)SendEnvelope(*dealer_, {MessageType::kShardWritten, opts_.generation, opts_.job_id,
                                  "trainer", last_shard_});
  }
}

}  // namespace moerun::trainer

namespace moerun::trainer {

void ControlChannel::ReportPreflight(const nlohmann::json& result) {
  nlohmann::json body = result;
  body["rank"] = opts_.rank;
  (void)SendEnvelope(
      *dealer_, {MessageType::kPreflightReport, opts_.generation, opts_.job_id, "trainer", body});
}

void ControlChannel::ReportShard(const nlohmann::json& shard) {
  nlohmann::json body = shard;
  body["rank"] = opts_.rank;
  (void)SendEnvelope(*dealer_,
                     {MessageType::kShardWritten, opts_.generation, opts_.job_id, "trainer", body});
  last_shard_ = std::move(body);
}

std::optional<std::vector<int64_t>> ControlChannel::PollCommitted() {
  std::optional<std::vector<int64_t>> newest;
  // Bounded: one call reads what a few steps could have brought, and never spins.
  for (int i = 0; i < 64; ++i) {
    auto msg = ReceiveEnvelope(*dealer_, 0);
    if (!msg.ok()) continue;  // one unreadable message costs only itself
    if (!msg->has_value()) break;
    const Envelope& e = **msg;
    if (e.type == MessageType::kStopJob && e.job_id == opts_.job_id) stop_requested_ = true;
    if (e.type != MessageType::kCheckpointCommitted || e.job_id != opts_.job_id) continue;
    auto body = CheckpointCommittedBody::FromJson(e.body);
    if (!body.ok() || body->steps.empty()) continue;  // nothing a writer could delete by
    newest = std::move(body->steps);
  }
  // Its step is committed (or a newer one is): the report need not go again.
  if (newest && !last_shard_.is_null() && last_shard_.value("step", int64_t(0)) <= newest->back())
    last_shard_ = nullptr;
  return newest;
}

}  // namespace moerun::trainer
