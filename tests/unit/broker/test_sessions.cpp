// Client keys, the session table's eviction rule, and the clock that stands still in a pause.
#include <catch2/catch.hpp>

#include <set>

#include "broker/clock.hpp"
#include "broker/sessions.hpp"

using namespace gymfarm::broker;
using namespace std::chrono_literals;

TEST_CASE("client keys of different paths or connections never collide") {
  const std::string local_name("\0local1", 7);
  const auto local = client_key(ClientPath::Local, local_name);
  const auto tcp_same_name = client_key(ClientPath::Tcp, local_name, "0000000000000001");
  const auto inproc_same_name = client_key(ClientPath::Inproc, local_name);
  const auto tcp_other_conn = client_key(ClientPath::Tcp, local_name, "0000000000000002");
  const auto tcp_no_conn = client_key(ClientPath::Tcp, local_name);
  std::set<std::string> keys{local, tcp_same_name, inproc_same_name, tcp_other_conn, tcp_no_conn};
  CHECK(keys.size() == 5);
  // a routing id that spells another key's prefix is still only an address
  const auto sneaky = client_key(ClientPath::Tcp, "l" + local_name, "0000000000000001");
  CHECK(sneaky != local);
  auto a = parse_client_key(sneaky);
  REQUIRE(a);
  CHECK(a->path == ClientPath::Tcp);
  CHECK(a->address == "l" + local_name);
  auto b = parse_client_key(local);
  REQUIRE(b);
  CHECK(b->path == ClientPath::Local);
  CHECK(b->address == local_name);
  CHECK_FALSE(parse_client_key(""));
  CHECK_FALSE(parse_client_key("x"));
  CHECK_FALSE(parse_client_key("z0001"));  // too short for a connection id
}

TEST_CASE("a full session table evicts the least recently active TCP session that holds nothing") {
  SessionTable t(3);
  std::set<std::string> busy;
  auto is_busy = [&](const std::string& k) { return busy.count(k) > 0; };
  const auto a = client_key(ClientPath::Tcp, "a", "0000000000000001");
  const auto b = client_key(ClientPath::Tcp, "b", "0000000000000002");
  const auto l = client_key(ClientPath::Local, "\0local1");
  CHECK(t.open(a, true, is_busy) == SessionTable::Open::Opened);
  CHECK(t.open(l, true, is_busy) == SessionTable::Open::Opened);
  CHECK(t.open(b, false, is_busy) == SessionTable::Open::Opened);
  CHECK(t.open(a, false, is_busy) == SessionTable::Open::Renewed);
  CHECK(t.authorized(a));  // a later hello does not take authorization away
  CHECK_FALSE(t.authorized(b));
  busy.insert(a);  // a holds an instance
  // a is the least recently active TCP session... after touching b and l
  t.touch(b);
  t.touch(l);
  for (int i = 0; i < 50; ++i) {
    const auto k = client_key(ClientPath::Tcp, "x" + std::to_string(i), "00000000000000ff");
    CHECK(t.open(k, true, is_busy) == SessionTable::Open::Opened);
    CHECK(t.size() == 3);
  }
  CHECK(t.authorized(a));  // busy: never evicted
  CHECK(t.authorized(l));  // local sessions end only when their socket closes
  CHECK_FALSE(t.authorized(b));
  CHECK(t.evicted() == 50);
  // a table of busy and local sessions refuses a new one rather than drop any
  busy.insert(client_key(ClientPath::Tcp, "x49", "00000000000000ff"));
  CHECK(t.open(client_key(ClientPath::Tcp, "new", "0000000000000003"), true, is_busy) == SessionTable::Open::Full);
  t.close(l);
  CHECK_FALSE(t.authorized(l));
  CHECK(t.open(client_key(ClientPath::Tcp, "new", "0000000000000003"), true, is_busy) == SessionTable::Open::Opened);
}

namespace {
class FakeRunningClock final : public RunningClock {
 public:
  TimePoint t{std::chrono::seconds(100)};

 protected:
  TimePoint real() const override { return t; }
};
}  // namespace

TEST_CASE("the running clock leaves a pause out") {
  FakeRunningClock c;
  const auto start = c.now();
  c.t += 40ms;
  CHECK(c.now() - start == 40ms);  // a normal turn counts
  c.t += 10s;                      // SIGSTOP for 10 s, wherever the broker was
  CHECK(c.now() - start == 40ms);
  CHECK(c.paused() == 10s);
  c.t += 50ms;
  CHECK(c.now() - start == 90ms);
  CHECK(c.now() - start == 90ms);  // reading twice moves nothing
}

TEST_CASE("a leased session expires when its client sends nothing, unless it waits for replies") {
  SessionTable t(10);
  const std::chrono::steady_clock::time_point t0{std::chrono::seconds(1000)};
  auto never_busy = [](const std::string&) { return false; };
  const auto a = client_key(ClientPath::Tcp, "a", "0000000000000001");
  const auto b = client_key(ClientPath::Tcp, "b", "0000000000000002");
  const auto c = client_key(ClientPath::Tcp, "c", "0000000000000003");
  t.open(a, true, never_busy, false, 2s, t0);
  t.open(b, true, never_busy, false, 2s, t0);
  t.open(c, true, never_busy, false, {}, t0);  // no lease
  CHECK(t.expired(t0 + 1s, never_busy).empty());
  t.touch(a, t0 + 1500ms);  // a request or a ping renews it
  auto gone = t.expired(t0 + 3s, never_busy);
  REQUIRE(gone.size() == 1);
  CHECK(gone[0] == b);
  CHECK(t.expired(t0 + 3s, [&](const std::string& k) { return k == b; }).empty());  // b waits for a reply
  CHECK(t.expired(t0 + 4s, never_busy).size() == 2);
  t.close(a);
  t.close(b);
  CHECK(t.expired(t0 + 100s, never_busy).empty());  // c has no lease
}

TEST_CASE("sessions are numbered in the order they opened and named by their hello, cleaned") {
  SessionTable t(10);
  auto idle = [](const std::string&) { return false; };
  const auto a = client_key(ClientPath::Local, "a");
  const auto b = client_key(ClientPath::Tcp, "b", "0000000000000002");
  t.open(a, true, idle);
  t.open(b, true, idle);
  t.set_name(b, std::string("trainer \x01\xff") + std::string(100, 'x'));
  REQUIRE(t.label(a));
  CHECK(t.label(a)->number == 1);
  CHECK(t.label(a)->name.empty());
  CHECK(t.label(b)->number == 2);
  CHECK(t.label(b)->name.size() == kMaxSessionName);
  CHECK(t.label(b)->name.rfind("trainer ??x", 0) == 0);  // control bytes and non-ASCII become '?'
  t.open(a, true, idle);                                 // a renewed hello keeps its number
  CHECK(t.label(a)->number == 1);
  t.close(a);
  CHECK_FALSE(t.label(a));
  t.open(a, true, idle);  // a session opened again is a new one
  CHECK(t.label(a)->number == 3);
  t.set_name(client_key(ClientPath::Local, "nobody"), "x");  // no session: nothing happens
  CHECK(t.size() == 2);
  CHECK(client_via(a) == "local");
  CHECK(client_via(b) == "tcp");
  CHECK(client_via(client_key(ClientPath::Inproc, "g")) == "gateway");
}
