#include "common/status.h"

namespace moerun {

std::string_view Status::CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "OK";
    case Code::kInvalidArgument:
      return "InvalidArgument";
    case Code::kNotFound:
      return "NotFound";
    case Code::kAlreadyExists:
      return "AlreadyExists";
    case Code::kIOError:
      return "IOError";
    case Code::kCorruption:
      return "Corruption";
    case Code::kTimedOut:
      return "TimedOut";
    case Code::kAborted:
      return "Aborted";
    case Code::kUnavailable:
      return "Unavailable";
    case Code::kFailedPrecondition:
      return "FailedPrecondition";
    case Code::kUnimplemented:
      return "Unimplemented";
    case Code::kInternal:
      return "Internal";
    case Code::kCancelled:
      return "Cancelled";
    case Code::kDataLoss:
      return "DataLoss";
    case Code::kResourceExhausted:
      return "ResourceExhausted";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out(CodeName(code_));
  out += ": ";
  out += message_;
  return out;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string msg(context);
  msg += ": ";
  msg += message_;
  return Status(code_, std::move(msg));
}

}  // namespace moerun
