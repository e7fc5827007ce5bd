// Status and Result<T>: how errors cross module boundaries in moerun.
//
// A Status is either OK or carries a code and a message written for the person who has
// to act on it ("checkpoint step 40, tensor model.norm.weight: CRC mismatch; the previous
// step is used"). Construct errors with the named constructors. Result<T> holds a value
// or a non-OK Status. Both are cheap to move, not thread-safe to share while mutating.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace moerun {

class [[nodiscard]] Status {
 public:
  enum class Code {
    kOk = 0,
    kInvalidArgument,     // the caller's input is wrong (config, flag, message)
    kNotFound,            // a named thing does not exist (file, job, checkpoint step)
    kAlreadyExists,       // a named thing exists and may not be replaced
    kIOError,             // the operating system refused a read or write
    kCorruption,          // stored bytes fail their checksum or format check
    kTimedOut,            // a named timeout expired
    kAborted,             // the operation was cancelled from elsewhere
    kUnavailable,         // a peer or service cannot be reached now; retrying may help
    kFailedPrecondition,  // the system is not in a state that allows the operation
    kUnimplemented,       // the feature exists in the spec but not in this build
    kInternal,            // a bug: an invariant did not hold
    kCancelled,           // stopped on request (a signal, a user's cancel), not by a failure
    kDataLoss,            // a job's input data is missing or unreadable (not its config)
    kResourceExhausted,   // out of memory (host or device) or another finite resource
  };

  Status() = default;  // OK

  static Status OK() { return Status(); }
  static Status InvalidArgument(std::string msg) {
    return {Code::kInvalidArgument, std::move(msg)};
  }
  static Status NotFound(std::string msg) { return {Code::kNotFound, std::move(msg)}; }
  static Status AlreadyExists(std::string msg) { return {Code::kAlreadyExists, std::move(msg)}; }
  static Status IOError(std::string msg) { return {Code::kIOError, std::move(msg)}; }
  static Status Corruption(std::string msg) { return {Code::kCorruption, std::move(msg)}; }
  static Status TimedOut(std::string msg) { return {Code::kTimedOut, std::move(msg)}; }
  static Status Aborted(std::string msg) { return {Code::kAborted, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {Code::kUnavailable, std::move(msg)}; }
  static Status FailedPrecondition(std::string msg) {
    return {Code::kFailedPrecondition, std::move(msg)};
  }
  static Status Unimplemented(std::string msg) { return {Code::kUnimplemented, std::move(msg)}; }
  static Status Internal(std::string msg) { return {Code::kInternal, std::move(msg)}; }
  static Status Cancelled(std::string msg) { return {Code::kCancelled, std::move(msg)}; }
  static Status DataLoss(std::string msg) { return {Code::kDataLoss, std::move(msg)}; }
  static Status ResourceExhausted(std::string msg) {
    return {Code::kResourceExhausted, std::move(msg)};
  }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "InvalidArgument: <message>", or "OK".
  std::string ToString() const;
  static std::string_view CodeName(Code code);

  // Returns a copy whose message is "<context>: <message>".
  Status WithContext(std::string_view context) const;

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : state_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(state_).ok() && "Result<T> needs a value or a non-OK Status");
  }

  bool ok() const { return std::holds_alternative<T>(state_); }
  // OK when a value is held.
  Status status() const { return ok() ? Status::OK() : std::get<Status>(state_); }

  T& value() & { return std::get<T>(state_); }
  const T& value() const& { return std::get<T>(state_); }
  T&& value() && { return std::get<T>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> state_;
};

}  // namespace moerun

// Returns early from a function returning Status (or Result<T>) when `expr` is not OK.
#define MOERUN_RETURN_IF_ERROR(expr)         \
  do {                                       \
    ::moerun::Status _moerun_st = (expr);    \
    if (!_moerun_st.ok()) return _moerun_st; \
  } while (0)
