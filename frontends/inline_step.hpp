#pragma once
// A dialect's step answered on the gateway's I/O thread (docs/architecture.md, "The gateway's
// steps"): a request that hands its work to the pool pays two wake-ups between threads, more than
// a quick env's step. When the gateway has nothing else in flight and the request is a step
// (GymieSession::is_step, RestSession::is_step: one farm call, nothing changed before it), the
// I/O thread runs the dialect itself with an InlineCaller, which posts the step to the instance's
// slab and polls it for a bounded time. A step the worker has not answered by then, or anything
// the I/O thread cannot finish without blocking, leaves it: the request runs again on a pool
// thread, whose AdoptingCaller gives the step already in the slab its result instead of sending
// it again. So a slow, hung or stopped env never holds the I/O thread longer than the budget.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "client/client.hpp"
#include "client/slabs.hpp"

namespace gymfarm::frontends {

// A step goes on the I/O thread only while the worker's recent requests took under kInlineFast;
// the I/O thread polls it for twice that time plus kInlineSlack, at most kInlineMaxSpin.
inline constexpr std::chrono::nanoseconds kInlineFast = std::chrono::microseconds(100);
inline constexpr std::chrono::nanoseconds kInlineSlack = std::chrono::microseconds(20);
inline constexpr std::chrono::nanoseconds kInlineMaxSpin = std::chrono::microseconds(220);

std::chrono::nanoseconds inline_budget(std::chrono::nanoseconds recent);

// How the gateway's steps went, for /metrics.
struct InlineCounts {
  std::atomic<uint64_t> answered{0};     // on the I/O thread
  std::atomic<uint64_t> handed_over{0};  // posted on the I/O thread, finished on the pool
};

class InlineCaller final : public client::Caller {
 public:
  struct NotInline {};  // thrown before anything was sent: the request runs on the pool as usual
  struct Deferred {};   // the step is in the slab: take_pending() gives it to a pool thread

  explicit InlineCaller(std::shared_ptr<client::SlabRegistry> slabs) : slabs_(std::move(slabs)) {}
  // The step's result or its error, as a Client gives them; NotInline or Deferred otherwise.
  client::Value call(std::string_view verb, std::string_view instance, const client::Value& body) override;
  std::unique_ptr<client::SlabCall> take_pending() { return std::move(pending_); }

 private:
  std::shared_ptr<client::SlabRegistry> slabs_;
  std::unique_ptr<client::SlabCall> pending_;
  bool called_ = false;
};

// Runs `handle(InlineCaller&)` (a dialect's handler for one step request) on this thread: its
// reply when the step was answered here; nullopt otherwise, with `pending` set when the step is
// in its slab for a pool thread to finish. `in_flight` counts it while it runs.
template <class Reply, class Handle>
std::optional<Reply> try_inline(const std::shared_ptr<client::SlabRegistry>& slabs, InlineCounts& counts,
                                std::atomic<std::size_t>& in_flight, Handle&& handle,
                                std::shared_ptr<client::SlabCall>& pending) {
  InlineCaller via(slabs);
  struct Running {
    std::atomic<std::size_t>& n;
    explicit Running(std::atomic<std::size_t>& c) : n(c) { ++n; }
    ~Running() { --n; }
    Running(const Running&) = delete;
    Running& operator=(const Running&) = delete;
  } running(in_flight);
  try {
    Reply out = handle(via);
    ++counts.answered;
    return out;
  } catch (const InlineCaller::NotInline&) {
  } catch (const InlineCaller::Deferred&) {
    pending = via.take_pending();
    ++counts.handed_over;
  }
  return std::nullopt;
}

// On a pool thread: the request tried on the I/O thread again, its step already in the slab.
class AdoptingCaller final : public client::Caller {
 public:
  // `farm`: this thread's Client (for the step's end and anything else); `others`: the pool's
  // Caller for calls that are not the pending step.
  AdoptingCaller(std::function<client::Client&()> farm, client::Caller& others,
                 std::shared_ptr<client::SlabCall> pending)
      : farm_(std::move(farm)), others_(others), pending_(std::move(pending)) {}
  ~AdoptingCaller() override;  // a pending step the request no longer made: waited for, its result dropped
  AdoptingCaller(const AdoptingCaller&) = delete;
  AdoptingCaller& operator=(const AdoptingCaller&) = delete;
  client::Value call(std::string_view verb, std::string_view instance, const client::Value& body) override;

 private:
  std::function<client::Client&()> farm_;
  client::Caller& others_;
  std::shared_ptr<client::SlabCall> pending_;
};

}  // namespace gymfarm::frontends
