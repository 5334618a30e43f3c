#include "shm/slab.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>

namespace gymfarm::shm {

namespace {

std::size_t round_to_pages(std::size_t bytes) {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return (bytes + page - 1) / page * page;
}

}  // namespace

bool Slab::create(std::size_t bytes, int& memfd, int& doorbell, std::string& err) {
  memfd = doorbell = -1;
  if (bytes < kMinSlabBytes || bytes > kMaxSlabBytes) {
    err = "slab size out of range";
    return false;
  }
  const std::size_t size = round_to_pages(bytes);
  memfd = ::memfd_create("gymfarm-slab", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (memfd < 0) {
    err = std::string("memfd_create: ") + std::generic_category().message(errno);
    return false;
  }
  auto fail = [&](const char* what) {
    err = std::string(what) + ": " + std::generic_category().message(errno);
    ::close(memfd);
    memfd = -1;
    if (doorbell >= 0) ::close(doorbell);
    doorbell = -1;
    return false;
  };
  if (::ftruncate(memfd, static_cast<off_t>(size)) != 0) return fail("ftruncate");
  if (::fcntl(memfd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0) return fail("F_ADD_SEALS");
  void* p = ::mmap(nullptr, sizeof(uint32_t) * 8, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (p == MAP_FAILED) return fail("mmap");
  auto* h = static_cast<uint32_t*>(p);
  const auto body = static_cast<uint32_t>(size - kHeaderBytes);
  const uint32_t req_cap = body / 4 / 64 * 64;  // a quarter for requests (actions), the rest for replies
  h[off::kVersion / 4] = kVersion;
  std::memcpy(static_cast<char*>(p) + off::kSize, &size, sizeof(uint64_t));
  h[off::kReqOff / 4] = static_cast<uint32_t>(kHeaderBytes);
  h[off::kReqCap / 4] = req_cap;
  h[off::kRepOff / 4] = static_cast<uint32_t>(kHeaderBytes) + req_cap;
  h[off::kRepCap / 4] = body - req_cap;
  std::atomic_ref<uint32_t>(h[off::kMagic / 4]).store(kMagic, std::memory_order_release);
  ::munmap(p, sizeof(uint32_t) * 8);
  doorbell = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (doorbell < 0) return fail("eventfd");
  return true;
}

bool Slab::map(int fd, std::string& err) {
  unmap();
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    err = std::string("fstat: ") + std::generic_category().message(errno);
    return false;
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size < kMinSlabBytes || size > kMaxSlabBytes) {
    err = "not a slab: size " + std::to_string(size);
    return false;
  }
  // A slab that can still shrink could make this process fault on a read: refuse it.
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
    err = "not a slab: it is not sealed against shrinking";
    return false;
  }
  // The slab, then a guard page nothing may touch: a write past the slab faults at once rather
  // than landing in whatever the kernel mapped next.
  const std::size_t page = round_to_pages(1);
  void* reserved = ::mmap(nullptr, size + page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserved == MAP_FAILED) {
    err = std::string("mmap: ") + std::generic_category().message(errno);
    return false;
  }
  void* p = ::mmap(reserved, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
  if (p == MAP_FAILED) {
    err = std::string("mmap: ") + std::generic_category().message(errno);
    ::munmap(reserved, size + page);
    return false;
  }
  base_ = static_cast<char*>(p);
  size_ = size;
  const uint64_t said = u64(off::kSize).load();
  const uint64_t req_off = u32(off::kReqOff).load(), req_cap = u32(off::kReqCap).load();
  const uint64_t rep_off = u32(off::kRepOff).load(), rep_cap = u32(off::kRepCap).load();
  if (u32(off::kMagic).load() != kMagic || u32(off::kVersion).load() != kVersion || said != size ||
      req_off < kHeaderBytes || req_off + req_cap > rep_off || rep_off + rep_cap > size) {
    unmap();
    err = "not a slab: bad header";
    return false;
  }
  req_off_ = req_off;
  req_cap_ = req_cap;
  rep_off_ = rep_off;
  rep_cap_ = rep_cap;
  return true;
}

Slab::~Slab() { unmap(); }

Slab::Slab(Slab&& o) noexcept { *this = std::move(o); }

Slab& Slab::operator=(Slab&& o) noexcept {
  if (this != &o) {
    unmap();
    base_ = std::exchange(o.base_, nullptr);
    size_ = std::exchange(o.size_, 0);
    req_off_ = o.req_off_;
    req_cap_ = o.req_cap_;
    rep_off_ = o.rep_off_;
    rep_cap_ = o.rep_cap_;
  }
  return *this;
}

void Slab::unmap() {
  if (base_) ::munmap(base_, size_ + round_to_pages(1));  // with its guard page
  base_ = nullptr;
  size_ = 0;
}

std::atomic_ref<uint32_t> Slab::u32(std::size_t at) const {
  return std::atomic_ref<uint32_t>(*reinterpret_cast<uint32_t*>(base_ + at));  // NOLINT: the slab's words
}

uint32_t* Slab::word(std::size_t at) const {
  return reinterpret_cast<uint32_t*>(base_ + at);  // NOLINT: the slab's words
}

std::atomic_ref<uint64_t> Slab::u64(std::size_t at) const {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(base_ + at));  // NOLINT: the slab's words
}

bool Slab::pending() const {
  return u32(off::kReqSeq).load(std::memory_order_acquire) != u32(off::kDoneSeq).load(std::memory_order_acquire);
}

bool Slab::request(std::string_view& body) const {
  const std::size_t len = u32(off::kReqLen).load(std::memory_order_acquire);
  if (len > req_cap_) return false;
  body = std::string_view(base_ + req_off_, len);
  return true;
}

bool Slab::reply(uint32_t seq, Status status, std::string_view body) {
  if (body.size() > rep_cap_) return false;
  std::memcpy(base_ + rep_off_, body.data(), body.size());
  u32(off::kRepStatus).store(static_cast<uint32_t>(status), std::memory_order_relaxed);
  u32(off::kRepLen).store(static_cast<uint32_t>(body.size()), std::memory_order_relaxed);
  publish(seq);
  return true;
}

void Slab::publish(uint32_t seq) {
  u32(off::kDoneSeq).store(seq, std::memory_order_seq_cst);
  // seq_cst store then load: a client that set client_waiting before it slept is seen here, or
  // its futex_wait sees the new done_seq and does not sleep (docs/protocol.md "Shared memory").
  if (u32(off::kClientWaiting).load(std::memory_order_seq_cst) != 0) futex_wake(word(off::kDoneSeq));
}

void futex_wake(uint32_t* word) { ::syscall(SYS_futex, word, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0); }

void futex_wait(uint32_t* word, uint32_t expected, std::chrono::microseconds timeout) {
  timespec ts{static_cast<time_t>(timeout.count() / 1000000), static_cast<long>(timeout.count() % 1000000 * 1000)};
  ::syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, nullptr, 0);
}

}  // namespace gymfarm::shm
