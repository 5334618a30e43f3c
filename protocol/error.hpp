#pragma once
// Errors as data: stable codes plus a message and details (docs/protocol.md "Errors").
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "protocol/value.hpp"

namespace gymfarm::protocol {

enum class ErrorCode {
  BadRequest,
  UnknownInstance,
  BadAction,
  EnvError,
  WorkerCrashed,
  Timeout,
  CapacityExhausted,
  Overloaded,
  ShuttingDown,
  Unauthorized,
  ResourceLimit,
  Internal,
};

std::string_view to_string(ErrorCode c);
std::optional<ErrorCode> error_code_from_string(std::string_view s);

struct Error {
  ErrorCode code = ErrorCode::Internal;
  std::string message;
  Value details = Value(Map{});

  Value to_value() const;
  // Unknown codes map to Internal with the original code kept in details.code.
  static Error from_value(const Value& v);
};

// An Error with its details (an empty map when there are none).
inline Error make_error(ErrorCode code, std::string message, Value details = Value(Map{})) {
  return Error{code, std::move(message), std::move(details)};
}

}  // namespace gymfarm::protocol
