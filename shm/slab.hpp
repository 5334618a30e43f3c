#pragma once
// A slab: the shared memory through which a client on the farm's host and the worker that holds
// its instance exchange step and reset requests and replies, without the broker on the path
// (docs/protocol.md "Shared memory"). The broker creates it (a sealed memfd and an eventfd, the
// worker's doorbell), hands both to the worker and, with the make's reply, to the client, and keeps
// a mapping to answer for a worker that died or timed out. The slab carries the same MessagePack
// bodies as the socket path, so every reply and error is the one the socket path would give.
//
// Layout (host byte order; every word below is 4-byte aligned and read and written atomically):
//   0   u32 magic "GFSL"   4 u32 version   8 u64 size   16 u32 request offset   20 u32 request capacity
//   24  u32 reply offset   28 u32 reply capacity
//   64  u32 req_seq (client: bumped after the request is written)   68 u32 req_verb   72 u32 req_len
//   76  u32 client_waiting (client: 1 while it sleeps on done_seq)   80 u32 worker_spin (client: 1 when
//       its next request follows soon, so the worker may busy-poll for it; 0: sleep at once)
//   128 u32 done_seq (worker, or the broker for a dead worker: = req_seq once the reply is whole; a
//       futex word)   132 u32 rep_status   136 u32 rep_len   140 u32 state   144 u64 step_ns (the
//       worker's recent time per request: a running average that halves towards a quicker one)
//   152 u64 steps (steps answered ok through the slab)
//   192 u32 worker_sleeping (worker: 1 while it sleeps on its doorbell)
//   256 the request area, then the reply area.
// A reply is read only once done_seq equals the request's sequence number, and the worker writes
// done_seq last, so a worker killed mid-write never shows a torn reply: the broker answers instead.
//
// A step posted as StepRaw (its body the same as Step's) may be answered laid out raw (OkRaw): the
// observation's bytes at a 64-byte-aligned offset of the reply area, written by the worker straight
// from the env's array, read by the client straight into its own. The reply area then holds
//   0 u32 terminated   4 u32 truncated   8 u32 desc_len   12 u32 tail_len   16 u32 obs_off
//   20 u32 obs_len   24 desc: [dtype, shape] as MessagePack (the observation's ndarray extension
//   without its bytes)   24 + desc_len tail: [reward, info] as MessagePack   obs_off the bytes
// and rep_len = obs_off + obs_len. The worker answers so only when the socket path's reply would
// be {obs, reward, terminated, truncated, info} with obs an ndarray (not 0-d) it sends from its
// buffer; otherwise, and for Step, the reply is the MessagePack body (Ok).
//
// A StepVec request (a vector env's step of several envs its worker hosts, posted in one of their
// slabs) carries the body of the worker's step_vec, {instances, actions, autoreset?}, and is
// answered with its stacked body (Ok), as the socket path's step_vec share. The worker serves it
// only when every instance named has a slab there granted to the same session as the one it was
// posted in; otherwise it answers Refused with nothing run, and the client sends it over the socket.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>

namespace gymfarm::shm {

inline constexpr uint32_t kMagic = 0x4C534647;  // "GFSL"
inline constexpr uint32_t kVersion = 2;
inline constexpr std::size_t kHeaderBytes = 256;
inline constexpr std::size_t kMinSlabBytes = 64 * 1024;
inline constexpr std::size_t kMaxSlabBytes = std::size_t{1} << 30;
// The raw step reply's fixed head and its observation's alignment (above).
inline constexpr std::size_t kRawHeadBytes = 24, kRawAlign = 64;

namespace off {
inline constexpr std::size_t kMagic = 0, kVersion = 4, kSize = 8, kReqOff = 16, kReqCap = 20, kRepOff = 24,
                             kRepCap = 28;
inline constexpr std::size_t kReqSeq = 64, kReqVerb = 68, kReqLen = 72, kClientWaiting = 76, kWorkerSpin = 80;
inline constexpr std::size_t kDoneSeq = 128, kRepStatus = 132, kRepLen = 136, kState = 140, kStepNs = 144, kSteps = 152;
inline constexpr std::size_t kWorkerSleeping = 192;
}  // namespace off

// What a request is (req_verb).
enum class Verb : uint32_t { Step = 1, Reset = 2, StepRaw = 3, StepVec = 4 };
// The request a req_verb stands for, as the broker times it: a reset, a vector step, or a step
// (StepRaw, and any other word, which the worker answers as a step's unknown verb).
inline Verb verb_of(uint32_t req_verb) {
  return req_verb == static_cast<uint32_t>(Verb::Reset)     ? Verb::Reset
         : req_verb == static_cast<uint32_t>(Verb::StepVec) ? Verb::StepVec
                                                            : Verb::Step;
}
// How it was answered (rep_status): ok, an error body, a reply too large for the reply area,
// which the worker keeps for the client to fetch with the `spilled` verb over its socket, or a
// StepRaw's reply laid out raw, or a StepVec not served through this slab (nothing ran: send it
// over the socket).
enum class Status : uint32_t { Ok = 0, Err = 1, Spilled = 2, OkRaw = 3, Refused = 4 };
// The slab's state: granted (the worker has not taken it), attached (the worker serves it), dead
// (the instance is gone: use the socket, which answers with the instance's tombstone).
enum class State : uint32_t { Granted = 0, Attached = 1, Dead = 2 };

// A mapping of a slab. Never trusts the slab's contents: the areas' offsets are read once, when it
// is mapped, and lengths are checked against them before use.
class Slab {
 public:
  Slab() = default;
  // Maps `fd` (a slab created by create()); false with err set when it is not a valid slab.
  bool map(int fd, std::string& err);
  ~Slab();
  Slab(Slab&& o) noexcept;
  Slab& operator=(Slab&& o) noexcept;
  Slab(const Slab&) = delete;
  Slab& operator=(const Slab&) = delete;

  // A new slab of `bytes` (rounded up to pages): a sealed memfd (it cannot grow or shrink, so no
  // holder can make another's reads fault) with its header written, and the doorbell eventfd.
  // False with err set on failure.
  static bool create(std::size_t bytes, int& memfd, int& doorbell, std::string& err);

  bool mapped() const { return base_ != nullptr; }
  std::size_t size() const { return size_; }
  std::atomic_ref<uint32_t> u32(std::size_t at) const;
  std::atomic_ref<uint64_t> u64(std::size_t at) const;
  uint32_t* word(std::size_t at) const;  // for futex(2)

  // The request the client posted; false when it does not lie within the request area.
  bool request(std::string_view& body) const;
  // Writes a reply for sequence number `seq` and publishes it (done_seq last), then wakes a
  // client that sleeps on it. False when `body` does not fit the reply area (nothing written).
  bool reply(uint32_t seq, Status status, std::string_view body);
  // Publishes `seq` as answered with a reply already written (status, length), and wakes.
  void publish(uint32_t seq);
  std::size_t reply_capacity() const { return rep_cap_; }
  std::size_t request_capacity() const { return req_cap_; }
  char* request_area() const { return base_ + req_off_; }
  char* reply_area() const { return base_ + rep_off_; }

  // Whether a request waits: req_seq differs from done_seq.
  bool pending() const;

 private:
  void unmap();
  char* base_ = nullptr;
  std::size_t size_ = 0;
  // The areas, read once at map() and checked: what the header says later is not trusted (env code
  // in the worker can write it), so a rewritten header cannot move a reply where a reader is not.
  std::size_t req_off_ = 0, req_cap_ = 0, rep_off_ = 0, rep_cap_ = 0;
};

// One turn of a spin on a slab's word: the CPU's pause hint, no system call. Spinners look at the
// rest of their world (a socket, the clock, other runnable processes) only every so many turns:
// entering the kernel on every turn leaves its code and data in the caches and branch predictors
// the process on this core works with.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Busy-polls until `done()` holds or `budget` has passed: in user space, the clock every 16th turn
// and a yield every 256th (so a worker that shares this core gets it). Whether done() held.
template <class Done>
bool spin_until(Done&& done, std::chrono::nanoseconds budget) {
  const auto start = std::chrono::steady_clock::now();
  for (unsigned turn = 1; !done(); ++turn) {
    if (turn % 16 == 0) {
      if (std::chrono::steady_clock::now() - start >= budget) return done();
      if (turn % 256 == 0) std::this_thread::yield();
    }
    cpu_relax();
  }
  return true;
}

// futex(2) on a shared (not process-private) word.
void futex_wake(uint32_t* word);
// Sleeps while `word` holds `expected`, up to `timeout`; returns at once if it does not.
void futex_wait(uint32_t* word, uint32_t expected, std::chrono::microseconds timeout);

}  // namespace gymfarm::shm
