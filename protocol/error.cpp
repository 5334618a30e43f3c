#include "protocol/error.hpp"

#include <array>

namespace gymfarm::protocol {
namespace {
constexpr std::array<std::pair<ErrorCode, std::string_view>, 12> kCodes{{
    {ErrorCode::BadRequest, "bad_request"},
    {ErrorCode::UnknownInstance, "unknown_instance"},
    {ErrorCode::BadAction, "bad_action"},
    {ErrorCode::EnvError, "env_error"},
    {ErrorCode::WorkerCrashed, "worker_crashed"},
    {ErrorCode::Timeout, "timeout"},
    {ErrorCode::CapacityExhausted, "capacity_exhausted"},
    {ErrorCode::Overloaded, "overloaded"},
    {ErrorCode::ShuttingDown, "shutting_down"},
    {ErrorCode::Unauthorized, "unauthorized"},
    {ErrorCode::ResourceLimit, "resource_limit"},
    {ErrorCode::Internal, "internal"},
}};
}  // namespace

std::string_view to_string(ErrorCode c) {
  for (const auto& [code, name] : kCodes) {
    if (code == c) return name;
  }
  return "internal";
}

std::optional<ErrorCode> error_code_from_string(std::string_view s) {
  for (const auto& [code, name] : kCodes) {
    if (name == s) return code;
  }
  return std::nullopt;
}

Value Error::to_value() const {
  Value v(Map{});
  v.set("code", std::string(to_string(code)));
  v.set("message", message);
  v.set("details", details.is_nil() ? Value(Map{}) : details);
  return v;
}

Error Error::from_value(const Value& v) {
  Error e;
  const Value* code = v.find("code");
  const Value* message = v.find("message");
  const Value* details = v.find("details");
  if (message && message->is_string()) e.message = message->as_string();
  if (details && details->is_map()) e.details = *details;
  if (code && code->is_string()) {
    if (auto c = error_code_from_string(code->as_string())) {
      e.code = *c;
    } else {
      e.details.set("code", code->as_string());
    }
  }
  return e;
}

}  // namespace gymfarm::protocol
