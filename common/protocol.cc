#include "common/protocol.h"

#include <algorithm>
#include <cstring>

#include "common/limits.h"

namespace moerun {
namespace {

constexpr char kMagic[4] = {'M', 'R', 'U', 'N'};
constexpr size_t kHeaderBytes = 4 + 2 + 2 + 8 + 2 + 2 + 4;

template <typename V>
void Put(std::string* out, V v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <typename V>
V Get(std::string_view in, size_t at) {
  V v;
  std::memcpy(&v, in.data() + at, sizeof v);
  return v;
}

// Depth of JSON nesting, outside strings; stops counting past the limit.
int JsonDepth(std::string_view s) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '{' || c == '[')
      max_depth = std::max(max_depth, ++depth);
    else if (c == '}' || c == ']')
      --depth;
    if (max_depth > kMaxMessageJsonDepth) break;
  }
  return max_depth;
}

}  // namespace

std::string_view ToString(MessageType t) {
  switch (t) {
    case MessageType::kRegister:
      return "Register";
    case MessageType::kRegistered:
      return "Registered";
    case MessageType::kHeartbeat:
      return "Heartbeat";
    case MessageType::kStartTrainers:
      return "StartTrainers";
    case MessageType::kStopTrainers:
      return "StopTrainers";
    case MessageType::kTrainerExited:
      return "TrainerExited";
    case MessageType::kRendezvous:
      return "Rendezvous";
    case MessageType::kStepReport:
      return "StepReport";
    case MessageType::kShardWritten:
      return "ShardWritten";
    case MessageType::kSubmitJob:
      return "SubmitJob";
    case MessageType::kCancelJob:
      return "CancelJob";
    case MessageType::kQuery:
      return "Query";
    case MessageType::kReply:
      return "Reply";
    case MessageType::kError:
      return "Error";
    case MessageType::kCheckpointCommitted:
      return "CheckpointCommitted";
    case MessageType::kRemoveWorker:
      return "RemoveWorker";
    case MessageType::kStopJob:
      return "StopJob";
    case MessageType::kPreflightReport:
      return "PreflightReport";
  }
  return "Unknown";
}

Result<std::string> EncodeEnvelope(const Envelope& e) {
  if (e.job_id.size() > kMaxMessageIdBytes || e.sender.size() > kMaxMessageIdBytes) {
    return Status::InvalidArgument("message ids may be at most " +
                                   std::to_string(kMaxMessageIdBytes) + " bytes");
  }
  if (!e.body.is_object()) return Status::InvalidArgument("a message body is a JSON object");
  const std::string body = e.body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  const size_t total = kHeaderBytes + e.job_id.size() + e.sender.size() + body.size();
  if (total > kMaxMessageBytes) {
    return Status::InvalidArgument(std::string(ToString(e.type)) + " message of " +
                                   std::to_string(total) + " bytes exceeds " +
                                   std::to_string(kMaxMessageBytes));
  }
  std::string out;
  out.reserve(total);
  out.append(kMagic, 4);
  Put<uint16_t>(&out, kProtocolVersion);
  Put<uint16_t>(&out, static_cast<uint16_t>(e.type));
  Put<uint64_t>(&out, e.generation);
  Put<uint16_t>(&out, uint16_t(e.job_id.size()));
  Put<uint16_t>(&out, uint16_t(e.sender.size()));
  Put<uint32_t>(&out, uint32_t(body.size()));
  out += e.job_id;
  out += e.sender;
  out += body;
  return out;
}

Result<Envelope> DecodeEnvelope(std::string_view in) {
  auto bad = [](const std::string& why) {
    return Status::InvalidArgument("malformed message: " + why);
  };
  if (in.size() > kMaxMessageBytes)
    return bad(std::to_string(in.size()) + " bytes exceeds the limit");
  if (in.size() >= 4 && std::memcmp(in.data(), kMagic, 4) != 0) return bad("not a moerun message");
  if (in.size() < kHeaderBytes) return bad("shorter than the header");
  const auto version = Get<uint16_t>(in, 4);
  if (version != kProtocolVersion) {
    return bad("protocol version " + std::to_string(version) + ", this build speaks " +
               std::to_string(kProtocolVersion));
  }
  const auto type = Get<uint16_t>(in, 6);
  if (type == 0 || type > kMaxMessageType) return bad("unknown type " + std::to_string(type));
  Envelope e;
  e.type = static_cast<MessageType>(type);
  e.generation = Get<uint64_t>(in, 8);
  const size_t job_len = Get<uint16_t>(in, 16), sender_len = Get<uint16_t>(in, 18);
  const size_t body_len = Get<uint32_t>(in, 20);
  if (job_len > kMaxMessageIdBytes || sender_len > kMaxMessageIdBytes) return bad("id too long");
  if (kHeaderBytes + job_len + sender_len + body_len != in.size())
    return bad("lengths do not match the size");
  e.job_id.assign(in.substr(kHeaderBytes, job_len));
  e.sender.assign(in.substr(kHeaderBytes + job_len, sender_len));
  const std::string_view body = in.substr(kHeaderBytes + job_len + sender_len, body_len);
  if (JsonDepth(body) > kMaxMessageJsonDepth)
    return bad("body nests deeper than " + std::to_string(kMaxMessageJsonDepth));
  e.body = nlohmann::json::parse(body.begin(), body.end(), nullptr, false);
  if (e.body.is_discarded() || !e.body.is_object()) return bad("body is not a JSON object");
  return e;
}

}  // namespace moerun
