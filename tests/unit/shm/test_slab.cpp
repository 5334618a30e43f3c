#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <string>
#include <thread>

#include "broker/slabs.hpp"
#include "shm/slab.hpp"
#include "transport/stream.hpp"

using namespace gymfarm;
namespace off = shm::off;

namespace {

constexpr std::size_t kBytes = std::size_t{256} * 1024;

struct Fds {
  int memfd = -1, doorbell = -1;
  Fds() {
    std::string err;
    REQUIRE(shm::Slab::create(kBytes, memfd, doorbell, err));
  }
  ~Fds() {
    if (memfd >= 0) ::close(memfd);
    if (doorbell >= 0) ::close(doorbell);
  }
};

// What a client does: write a request and bump req_seq.
uint32_t post(shm::Slab& s, std::string_view body) {
  std::memcpy(s.word(s.u32(off::kReqOff).load()), body.data(), body.size());
  s.u32(off::kReqLen).store(static_cast<uint32_t>(body.size()));
  s.u32(off::kReqVerb).store(static_cast<uint32_t>(shm::Verb::Step));
  const uint32_t seq = s.u32(off::kReqSeq).load() + 1;
  s.u32(off::kReqSeq).store(seq);
  return seq;
}

std::string reply_of(const shm::Slab& s) {
  return std::string(reinterpret_cast<const char*>(s.word(s.u32(off::kRepOff).load())), s.u32(off::kRepLen).load());
}

}  // namespace

TEST_CASE("a slab is a sealed memfd: nobody can shrink or grow it under another's mapping") {
  Fds f;
  REQUIRE(::ftruncate(f.memfd, 4096) == -1);
  REQUIRE(errno == EPERM);
  REQUIRE(::ftruncate(f.memfd, 1 << 24) == -1);
  shm::Slab s;
  std::string err;
  REQUIRE(s.map(f.memfd, err));
  REQUIRE(s.size() == kBytes);
  REQUIRE(s.reply_capacity() > 3 * kBytes / 4 - 4096);
}

TEST_CASE("a memfd that is not a sealed slab is refused") {
  const int fd = ::memfd_create("not-a-slab", MFD_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, static_cast<off_t>(kBytes)) == 0);
  shm::Slab s;
  std::string err;
  REQUIRE_FALSE(s.map(fd, err));  // not sealed
  REQUIRE(err.find("sealed") != std::string::npos);
  ::close(fd);

  Fds f;  // a slab whose header another process rewrote before this one mapped it
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, f.memfd, 0);
  REQUIRE(p != MAP_FAILED);
  static_cast<uint32_t*>(p)[off::kRepCap / 4] = 1u << 30;
  ::munmap(p, 4096);
  REQUIRE_FALSE(s.map(f.memfd, err));
  REQUIRE(err == "not a slab: bad header");
}

TEST_CASE("a reply is published last and wakes a client asleep on it; one too large is refused") {
  Fds f;
  shm::Slab worker, client;
  std::string err;
  REQUIRE(worker.map(f.memfd, err));
  REQUIRE(client.map(f.memfd, err));
  const uint32_t seq = post(client, "request");
  REQUIRE(worker.pending());
  std::string_view req;
  REQUIRE(worker.request(req));
  REQUIRE(req == "request");

  std::atomic<bool> woke{false};
  std::thread sleeper([&] {
    client.u32(off::kClientWaiting).store(1);
    while (client.u32(off::kDoneSeq).load() != seq)
      shm::futex_wait(client.word(off::kDoneSeq), client.u32(off::kDoneSeq).load(), std::chrono::seconds(5));
    woke = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  REQUIRE_FALSE(woke.load());
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(worker.reply(seq, shm::Status::Ok, "reply"));
  sleeper.join();
  REQUIRE(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));  // woken, not timed out
  REQUIRE_FALSE(worker.pending());
  REQUIRE(reply_of(client) == "reply");
  REQUIRE_FALSE(worker.reply(seq, shm::Status::Ok, std::string(worker.reply_capacity() + 1, 'x')));
  REQUIRE(reply_of(client) == "reply");  // nothing written
}

TEST_CASE("a header rewritten after mapping moves nothing: the areas are the ones read at map time") {
  Fds f;
  shm::Slab worker, client;
  std::string err;
  REQUIRE(worker.map(f.memfd, err));
  REQUIRE(client.map(f.memfd, err));
  const auto rep_off = client.u32(off::kRepOff).load();
  worker.u32(off::kRepOff).store(300);  // env code in the worker scribbles the header
  worker.u32(off::kRepCap).store(1u << 30);
  const uint32_t seq = post(client, "x");
  REQUIRE(worker.reply(seq, shm::Status::Ok, "where it belongs"));
  REQUIRE(std::string(reinterpret_cast<const char*>(client.word(rep_off)), 16) == "where it belongs");
}

TEST_CASE("the broker's scan: steps counted, a request past the deadline reported once, answered at the end") {
  broker::SlabTable table;
  std::string err;
  const auto fds = table.grant("i1", kBytes, err);
  REQUIRE(fds.size() == 2);
  shm::Slab client;
  REQUIRE(client.map(fds[0], err));
  table.handed("i1");
  REQUIRE(table.fds("i1").empty());

  broker::TimePoint now{};
  uint64_t steps = 0;
  auto scan = [&] {
    return table.scan(
        now, std::chrono::seconds(1), [](const std::string&) { return true; },
        [&](const std::string&, uint64_t, uint64_t n) { steps += n; },
        [](const std::string& i, shm::Verb) { return "timeout of " + i; });
  };
  client.u64(off::kSteps).store(5);
  client.u32(off::kDoneSeq).store(3);
  client.u32(off::kReqSeq).store(3);
  REQUIRE(scan().empty());
  REQUIRE(steps == 5);

  post(client, "step");
  REQUIRE(scan().empty());  // first seen waiting now
  now += std::chrono::milliseconds(900);
  REQUIRE(scan().empty());
  now += std::chrono::milliseconds(200);
  const auto overdue = scan();
  REQUIRE(overdue.size() == 1);
  REQUIRE(overdue[0].instance == "i1");
  now += std::chrono::seconds(5);
  REQUIRE(scan().empty());  // reported once

  table.end("i1", "worker crashed");  // its worker is reaped: the timeout is the answer
  REQUIRE(client.u32(off::kDoneSeq).load() == client.u32(off::kReqSeq).load());
  REQUIRE(client.u32(off::kRepStatus).load() == static_cast<uint32_t>(shm::Status::Err));
  REQUIRE(reply_of(client) == "timeout of i1");
  REQUIRE(client.u32(off::kState).load() == static_cast<uint32_t>(shm::State::Dead));
  REQUIRE(table.size() == 0);
}

TEST_CASE("a slab whose instance is gone is dropped by the scan, unanswered requests left to the socket") {
  broker::SlabTable table;
  std::string err;
  const auto fds = table.grant("i2", kBytes, err);
  shm::Slab client;
  REQUIRE(client.map(fds[0], err));
  post(client, "step");
  table.scan(
      broker::TimePoint{}, std::chrono::seconds(1), [](const std::string&) { return false; },
      [](const std::string&, uint64_t, uint64_t) {}, [](const std::string&, shm::Verb) { return std::string(); });
  REQUIRE(table.size() == 0);
  REQUIRE(client.u32(off::kState).load() == static_cast<uint32_t>(shm::State::Dead));
  REQUIRE(client.pending());  // the client asks again over the socket, where the tombstone answers
}

TEST_CASE("descriptors travel with a message only to a connection that accepts them") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  transport::StreamConn a(sv[0], 0), b(sv[1], 0);
  b.accept_fds(true);
  Fds f;
  REQUIRE(a.send({"before"}));
  REQUIRE(a.send({"slab", "i"}, {f.memfd, f.doorbell}));
  REQUIRE(a.send({"after"}));
  transport::Frames in;
  std::vector<std::string> got;
  for (int i = 0; i < 1000 && got.size() < 3; ++i) {
    if (b.next(in) == transport::StreamConn::Read::Message) got.emplace_back(transport::view(in[0]));
  }
  REQUIRE(got == std::vector<std::string>{"before", "slab", "after"});
  const int memfd = b.take_fd(), doorbell = b.take_fd();
  REQUIRE(memfd >= 0);
  REQUIRE(doorbell >= 0);
  REQUIRE(b.take_fd() == -1);
  shm::Slab s;
  std::string err;
  REQUIRE(s.map(memfd, err));  // the same slab
  ::close(memfd);
  ::close(doorbell);

  // Without accept_fds the kernel closes what comes: a peer cannot fill this process's table.
  REQUIRE(b.send({"slab", "i"}, {f.memfd}));
  transport::StreamConn& plain = a;
  for (int i = 0; i < 1000; ++i) {
    if (plain.next(in) == transport::StreamConn::Read::Message) break;
  }
  REQUIRE(transport::view(in[0]) == "slab");
  REQUIRE(plain.take_fd() == -1);
}

TEST_CASE("descriptors queued behind a message the socket could not take go out with their own message") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  transport::StreamConn a(sv[0], 0), b(sv[1], 0);
  b.accept_fds(true);
  Fds f;
  const std::string big(std::size_t{4} << 20, 'x');  // more than the socket buffers take at once
  REQUIRE(a.send({big}));
  REQUIRE(a.wants_write());
  REQUIRE(a.send({"slab", "i"}, {f.memfd, f.doorbell}));  // queued, its fds duplicated
  REQUIRE(a.send({"after"}));
  transport::Frames in;
  std::vector<std::string> got;
  int memfd = -1, doorbell = -1;
  for (int i = 0; i < 100000 && got.size() < 3; ++i) {
    if (a.wants_write()) REQUIRE(a.flush());
    if (b.next(in) != transport::StreamConn::Read::Message) continue;
    got.emplace_back(transport::view(in[0]).substr(0, 8));
    if (got.back() == "slab") {
      memfd = b.take_fd();
      doorbell = b.take_fd();
    }
  }
  REQUIRE(got == std::vector<std::string>{big.substr(0, 8), "slab", "after"});
  REQUIRE(memfd >= 0);
  REQUIRE(doorbell >= 0);
  REQUIRE(b.take_fd() == -1);
  shm::Slab s;
  std::string err;
  REQUIRE(s.map(memfd, err));
  ::close(memfd);
  ::close(doorbell);
}
