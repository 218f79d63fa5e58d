// Status and StatusOr<T>: errors as values at every module boundary.
//
// A Status is either OK or carries a canonical code and a human-readable message. Codes follow
// Abseil's canonical set; src/http maps them to HTTP statuses in one table (http/errors.h).
// Status and StatusOr are [[nodiscard]]: dropping one on purpose must be spelled
// `.IgnoreError()` so it can be found with grep.
//
// Thread-safety: values; safe to copy and move across threads.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace edgestate {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // The caller sent something malformed; retrying will not help.
  kNotFound,            // The named thing does not exist.
  kFailedPrecondition,  // Well-formed, but the current state forbids it (e.g. overflow).
  kOutOfRange,          // A value lies outside its permitted range.
  kResourceExhausted,   // A limit was hit (connections, queue); retry later.
  kUnauthenticated,     // Missing or wrong credentials.
  kUnavailable,         // Transient: storage or a peer is unavailable; retry with backoff.
  kDeadlineExceeded,    // The operation did not finish in time.
  kInternal,            // An invariant broke; a bug.
  kAborted,             // Superseded by a concurrent operation (e.g. a purge); nothing changed.
};

// Returns a stable snake_case name for `code` ("invalid_argument", ...).
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK.
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) {
    return {StatusCode::kInvalidArgument, std::move(m)};
  }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status FailedPrecondition(std::string m) {
    return {StatusCode::kFailedPrecondition, std::move(m)};
  }
  static Status OutOfRange(std::string m) { return {StatusCode::kOutOfRange, std::move(m)}; }
  static Status ResourceExhausted(std::string m) {
    return {StatusCode::kResourceExhausted, std::move(m)};
  }
  static Status Unauthenticated(std::string m) {
    return {StatusCode::kUnauthenticated, std::move(m)};
  }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status DeadlineExceeded(std::string m) {
    return {StatusCode::kDeadlineExceeded, std::move(m)};
  }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
  static Status Aborted(std::string m) { return {StatusCode::kAborted, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "invalid_argument: name is empty", or "ok".
  std::string ToString() const;
  // The one sanctioned way to drop a Status.
  void IgnoreError() const {}

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Holds either a T or a non-OK Status.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : rep_(std::move(value)) {}        // NOLINT: implicit by design.
  StatusOr(Status status) : rep_(std::move(status)) {  // NOLINT: implicit by design.
    assert(!std::get<Status>(rep_).ok() && "StatusOr built from an OK Status");
  }

  bool ok() const { return std::holds_alternative<T>(rep_); }
  // REQUIRES: !ok() for a meaningful status; returns OK when a value is held.
  Status status() const { return ok() ? Status() : std::get<Status>(rep_); }
  // REQUIRES: ok().
  const T& value() const& { return std::get<T>(rep_); }
  T& value() & { return std::get<T>(rep_); }
  T&& value() && { return std::get<T>(std::move(rep_)); }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }

 private:
  std::variant<Status, T> rep_;
};

}  // namespace edgestate
