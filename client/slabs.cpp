#include "client/slabs.hpp"

#include <unistd.h>

#include <cstring>
#include <utility>

#include "client/client.hpp"
#include "protocol/codec.hpp"
#include "protocol/error.hpp"
#include "protocol/frames.hpp"

namespace gymfarm::client {

namespace off = shm::off;
using protocol::Error;
using protocol::ErrorCode;
using protocol::Value;

SlabEntry::~SlabEntry() {
  if (doorbell >= 0) ::close(doorbell);
}

std::shared_ptr<SlabEntry> SlabRegistry::find(const std::string& instance) {
  std::lock_guard lock(mu_);
  auto it = map_.find(instance);
  return it == map_.end() ? nullptr : it->second;
}

void SlabRegistry::add(const std::string& instance, std::shared_ptr<SlabEntry> e) {
  std::lock_guard lock(mu_);
  for (auto it = map_.begin(); it != map_.end();) {
    const auto state = it->second->slab.u32(off::kState).load(std::memory_order_acquire);
    it = state == static_cast<uint32_t>(shm::State::Dead) ? map_.erase(it) : std::next(it);
  }
  map_[instance] = std::move(e);
}

void SlabRegistry::erase(const std::string& instance) {
  std::lock_guard lock(mu_);
  map_.erase(instance);
}

void SlabRegistry::clear() {
  std::lock_guard lock(mu_);
  map_.clear();
}

std::shared_ptr<SlabRegistry> make_slab_registry() { return std::make_shared<SlabRegistry>(); }

SlabCall::SlabCall(std::shared_ptr<SlabRegistry> slabs, std::shared_ptr<SlabEntry> entry, std::string instance,
                   std::string_view verb, std::string body)
    : slabs_(std::move(slabs)),
      entry_(std::move(entry)),
      instance_(std::move(instance)),
      verb_(verb == protocol::verb::kReset ? protocol::verb::kReset : protocol::verb::kStep),
      body_(std::move(body)) {}

SlabCall::~SlabCall() {
  if (has_turn_) entry_->turn.release();
}

std::unique_ptr<SlabCall> SlabCall::post(const std::shared_ptr<SlabRegistry>& slabs, const std::string& instance,
                                         std::string_view verb, std::string body) {
  auto entry = slabs->find(instance);
  if (!entry) return nullptr;
  entry->turn.acquire();
  std::unique_ptr<SlabCall> call(new SlabCall(slabs, std::move(entry), instance, verb, std::move(body)));
  return call->send() ? std::move(call) : nullptr;
}

std::unique_ptr<SlabCall> SlabCall::try_post(const std::shared_ptr<SlabRegistry>& slabs, const std::string& instance,
                                             std::string_view verb, std::string body, std::chrono::nanoseconds fast) {
  auto entry = slabs->find(instance);
  if (!entry || entry->slab.u64(off::kStepNs).load(std::memory_order_relaxed) >= static_cast<uint64_t>(fast.count()) ||
      !entry->turn.try_acquire()) {
    return nullptr;
  }
  std::unique_ptr<SlabCall> call(new SlabCall(slabs, std::move(entry), instance, verb, std::move(body)));
  return call->send() ? std::move(call) : nullptr;
}

bool SlabCall::send() {
  shm::Slab& s = entry_->slab;
  const bool attached = s.u32(off::kState).load(std::memory_order_acquire) ==
                        static_cast<uint32_t>(shm::State::Attached);
  if (!attached) slabs_->erase(instance_);
  if (!attached || body_.size() > s.request_capacity()) {
    entry_->turn.release();
    has_turn_ = false;
    return false;
  }
  std::memcpy(s.request_area(), body_.data(), body_.size());
  s.u32(off::kReqVerb)
      .store(static_cast<uint32_t>(verb_ == protocol::verb::kReset ? shm::Verb::Reset : shm::Verb::Step),
             std::memory_order_relaxed);
  s.u32(off::kReqLen).store(static_cast<uint32_t>(body_.size()), std::memory_order_relaxed);
  s.u32(off::kWorkerSpin).store(1, std::memory_order_relaxed);
  seq_ = s.u32(off::kReqSeq).load(std::memory_order_relaxed) + 1;
  s.u32(off::kReqSeq).store(seq_, std::memory_order_seq_cst);
  if (s.u32(off::kWorkerSleeping).load(std::memory_order_seq_cst) != 0) {
    const uint64_t one = 1;
    if (::write(entry_->doorbell, &one, sizeof one) < 0) {
      // the worker still looks at its slabs every 500 ms
    }
  }
  return true;
}

bool SlabCall::done() const { return entry_->slab.u32(off::kDoneSeq).load(std::memory_order_acquire) == seq_; }

std::chrono::nanoseconds SlabCall::recent() const {
  return std::chrono::nanoseconds(entry_->slab.u64(off::kStepNs).load(std::memory_order_relaxed));
}

bool SlabCall::spin(std::chrono::nanoseconds budget) const {
  return shm::spin_until([this] { return done(); }, budget);
}

bool SlabCall::sleep(std::chrono::steady_clock::time_point deadline, const std::string& endpoint,
                     const std::function<void()>& watch) {
  shm::Slab& s = entry_->slab;
  if (done()) return true;
  s.u32(off::kClientWaiting).store(1, std::memory_order_seq_cst);
  struct Clear {
    shm::Slab& s;
    ~Clear() { s.u32(off::kClientWaiting).store(0, std::memory_order_relaxed); }
  } clear{s};
  std::optional<std::chrono::steady_clock::time_point> dead_since;
  while (!done()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      throw ClientError(Error{ErrorCode::Timeout,
                              "no reply from the farm at " + endpoint + " within the client's timeout",
                              Value(protocol::Map{})});
    }
    if (s.u32(off::kState).load(std::memory_order_acquire) == static_cast<uint32_t>(shm::State::Dead)) {
      if (!dead_since) dead_since = now;
      if (now - *dead_since > std::chrono::milliseconds(200)) {  // unanswered: the socket's tombstone answers
        slabs_->erase(instance_);
        return false;
      }
    }
    shm::futex_wait(s.word(off::kDoneSeq), s.u32(off::kDoneSeq).load(std::memory_order_acquire),
                    std::chrono::milliseconds(50));
    if (watch) watch();
  }
  return true;
}

std::optional<Value> SlabCall::result() {
  shm::Slab& s = entry_->slab;
  const auto status = s.u32(off::kRepStatus).load(std::memory_order_relaxed);
  const std::size_t len = s.u32(off::kRepLen).load(std::memory_order_relaxed);
  if (status == static_cast<uint32_t>(shm::Status::Spilled)) return std::nullopt;
  auto corrupt = [&] {
    slabs_->erase(instance_);
    return ClientError(Error{ErrorCode::Internal, "the shared-memory reply for instance " + instance_ + " is corrupt",
                             Value(protocol::Map{})});
  };
  if (len > s.reply_capacity() || status > static_cast<uint32_t>(shm::Status::Err)) throw corrupt();
  // a copy first: env code in the worker can write the slab while it is read
  const std::string body(s.reply_area(), len);
  Value v;
  std::string err;
  if (!protocol::decode(body, v, err)) {
    throw ClientError(Error{ErrorCode::Internal, "bad reply from the farm: " + err, Value(protocol::Map{})});
  }
  if (status != static_cast<uint32_t>(shm::Status::Ok)) throw ClientError(Error::from_value(v));
  return v;
}

}  // namespace gymfarm::client
