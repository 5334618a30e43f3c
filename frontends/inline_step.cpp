#include "frontends/inline_step.hpp"

#include <algorithm>

#include "protocol/codec.hpp"
#include "protocol/frames.hpp"

namespace gymfarm::frontends {

std::chrono::nanoseconds inline_budget(std::chrono::nanoseconds recent) {
  return std::min(2 * recent + kInlineSlack, kInlineMaxSpin);
}

client::Value InlineCaller::call(std::string_view verb, std::string_view instance, const client::Value& body) {
  if (called_ || verb != protocol::verb::kStep || instance.empty()) throw NotInline{};
  called_ = true;
  auto step = client::SlabCall::try_post(slabs_, std::string(instance), verb, protocol::encode(body), kInlineFast);
  if (!step) throw NotInline{};
  if (!step->spin(inline_budget(step->recent()))) {
    pending_ = std::move(step);
    throw Deferred{};
  }
  auto result = step->result();  // the env's error thrown as the Client throws it
  if (!result) {                 // too large for the slab: a Client fetches it
    pending_ = std::move(step);
    throw Deferred{};
  }
  return std::move(*result);
}

client::Value AdoptingCaller::call(std::string_view verb, std::string_view instance, const client::Value& body) {
  if (pending_ && verb == protocol::verb::kStep && instance == pending_->instance()) {
    const auto step = std::move(pending_);
    return farm_().finish(*step);
  }
  return others_.call(verb, instance, body);
}

AdoptingCaller::~AdoptingCaller() {
  if (!pending_) return;
  try {
    farm_().finish(*pending_);
  } catch (...) {  // NOLINT(bugprone-empty-catch): the request's reply is already decided
  }
}

}  // namespace gymfarm::frontends
