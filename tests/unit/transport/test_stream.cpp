#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "transport/stream.hpp"

using namespace gymfarm::transport;
using Read = StreamConn::Read;

namespace {

struct Pair {
  Pair(long long max_a = 0, long long max_b = 0) {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    a = std::make_unique<StreamConn>(sv[0], max_a);
    b = std::make_unique<StreamConn>(sv[1], max_b);
  }
  std::unique_ptr<StreamConn> a, b;
};

// Reads from `c` until a message or `limit`; flushes `writer` while waiting.
Read read_one(StreamConn& c, Frames& out, StreamConn* writer = nullptr) {
  for (int i = 0; i < 20000; ++i) {
    if (writer && writer->wants_write()) REQUIRE(writer->flush());
    const Read r = c.wait(out, std::chrono::microseconds(0), std::chrono::milliseconds(1));
    if (r != Read::Nothing) return r;
  }
  return Read::Nothing;
}

}  // namespace

TEST_CASE("stream messages keep their frames, empty ones included, in order") {
  Pair p;
  REQUIRE(p.a->send(std::vector<std::string_view>{"step", "", "12345678", std::string_view("\0x\0", 3)}));
  REQUIRE(p.a->send(std::vector<std::string_view>{"second"}));
  Frames m;
  REQUIRE(read_one(*p.b, m) == Read::Message);
  REQUIRE(m.size() == 4);
  CHECK(view(m[0]) == "step");
  CHECK(view(m[1]).empty());
  CHECK(view(m[2]) == "12345678");
  CHECK(view(m[3]) == std::string_view("\0x\0", 3));
  REQUIRE(read_one(*p.b, m) == Read::Message);
  REQUIRE(m.size() == 1);
  CHECK(view(m[0]) == "second");
  CHECK(p.b->next(m) == Read::Nothing);
}

TEST_CASE("a frame larger than the socket buffer is queued, flushed and read back whole") {
  Pair p;
  std::string big(8 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 % 251);
  REQUIRE(p.a->send(std::vector<std::string_view>{"rep", big, "tail"}));
  CHECK(p.a->wants_write());  // 8 MB does not fit a unix socket's buffer
  Frames m;
  REQUIRE(read_one(*p.b, m, p.a.get()) == Read::Message);
  REQUIRE(m.size() == 3);
  CHECK(view(m[1]) == big);
  CHECK(view(m[2]) == "tail");
  CHECK_FALSE(p.a->wants_write());
}

TEST_CASE("many small messages written at once are all read") {
  Pair p;
  for (int i = 0; i < 2000; ++i) {
    const std::string s = std::to_string(i);
    REQUIRE(p.a->send(std::vector<std::string_view>{"n", s}));
  }
  Frames m;
  for (int i = 0; i < 2000; ++i) {
    REQUIRE(read_one(*p.b, m, p.a.get()) == Read::Message);
    REQUIRE(view(m[1]) == std::to_string(i));
  }
}

TEST_CASE("a message over the size limit and a closed peer are reported") {
  {
    Pair p(0, 1000);
    REQUIRE(p.a->send(std::vector<std::string_view>{std::string(600, 'x'), std::string(600, 'y')}));
    Frames m;
    CHECK(read_one(*p.b, m) == Read::TooLarge);
  }
  {
    Pair p;
    REQUIRE(p.a->send(std::vector<std::string_view>{"last"}));
    p.a.reset();  // closes its end
    Frames m;
    REQUIRE(read_one(*p.b, m) == Read::Message);
    CHECK(read_one(*p.b, m) == Read::Closed);
    CHECK_FALSE(p.b->send(std::vector<std::string_view>{"to nobody"}));
  }
}

TEST_CASE("a stream server names connections by their first message and drops strangers") {
  const auto dir = std::filesystem::temp_directory_path() / ("gf-stream-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "s.sock").string();
  std::vector<std::pair<std::string, std::string>> got;
  std::vector<std::string> closed;
  {
    StreamServer server(0, [](Frames& first) {
      return first.size() == 2 && view(first[0]) == "link" && view(first[1]) != "stranger"
                 ? gymfarm::transport::str(first[1])
                 : std::string();
    });
    std::string err;
    REQUIRE(server.listen(path, err));
    CHECK((std::filesystem::status(path).permissions() & std::filesystem::perms::others_all) ==
          std::filesystem::perms::none);
    StreamConn w1(connect_unix(path), 0), w2(connect_unix(path), 0);
    REQUIRE(w1.send(std::vector<std::string_view>{"link", "w1"}));
    REQUIRE(w1.send(std::vector<std::string_view>{"hello from", "w1"}));
    REQUIRE(w2.send(std::vector<std::string_view>{"link", "stranger"}));
    auto turn = [&] {
      std::vector<zmq::pollitem_t> items;
      server.fill(items);
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(50));
      server.process(
          items, 0, [&](const std::string& n, Frames& f) { got.emplace_back(n, gymfarm::transport::str(f[0])); },
          [&](const std::string& n, bool) { closed.push_back(n); });
    };
    for (int i = 0; i < 40 && (got.empty() || server.size() != 1); ++i) turn();
    REQUIRE(got.size() == 1);
    CHECK(got[0] == std::make_pair(std::string("w1"), std::string("hello from")));
    CHECK(server.has("w1"));
    CHECK_FALSE(server.has("stranger"));
    REQUIRE(server.send("w1", std::vector<std::string_view>{"bye"}));
    Frames m;
    REQUIRE(read_one(w1, m) == Read::Message);
    CHECK(view(m[0]) == "bye");
    Frames none;
    CHECK(read_one(w2, none) == Read::Closed);  // the stranger was closed
    ::shutdown(w1.fd(), SHUT_RDWR);
    for (int i = 0; i < 40 && closed.empty(); ++i) turn();
    CHECK(closed == std::vector<std::string>{"w1"});
    CHECK_FALSE(server.has("w1"));
  }
  CHECK_FALSE(std::filesystem::exists(path));  // the server removes its socket
  std::filesystem::remove_all(dir);
}

TEST_CASE("spinning stops after four empty spins and comes back after a probe that hits") {
  SpinPolicy p;
  for (int i = 0; i < 4; ++i) {
    REQUIRE(p.should_spin());
    p.spun(false);
  }
  auto skipped_before_probe = [&p] {
    int n = 0;
    while (!p.should_spin()) ++n;
    return n;
  };
  CHECK(skipped_before_probe() == 15);  // every 16th wait probes
  p.spun(false);                        // the probe missed: probe half as often
  CHECK(skipped_before_probe() == 31);
  p.spun(false);
  CHECK(skipped_before_probe() == 63);
  p.spun(true);  // messages come quickly again: spin every time
  for (int i = 0; i < 10; ++i) {
    CHECK(p.should_spin());
    p.spun(true);
  }
}

TEST_CASE("missed probes back off to one in 1024 waits, no further") {
  SpinPolicy p;
  for (int i = 0; i < 4; ++i) p.spun(false);
  int last = 0;
  for (int k = 0; k < 12; ++k) {
    last = 0;
    while (!p.should_spin()) ++last;
    p.spun(false);
  }
  CHECK(last == 1023);
}

TEST_CASE("a stream server reads on at the next turn what one turn's share left in the buffer") {
  const auto dir = std::filesystem::temp_directory_path() / ("gf-stream-backlog-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "s.sock").string();
  constexpr std::size_t kMessages = 2000;  // what the socket does not take at once is flushed in large writes
  std::size_t got = 0;
  {
    StreamServer server(0, nullptr);
    std::string err;
    REQUIRE(server.listen(path, err));
    StreamConn client(connect_unix(path), 0);
    for (std::size_t i = 0; i < kMessages; ++i) {
      REQUIRE(client.send(std::vector<std::string_view>{"n", std::to_string(i)}));
    }
    bool backlog_seen = false;
    for (int turn = 0; turn < 200 && got < kMessages; ++turn) {
      if (client.wants_write()) REQUIRE(client.flush());
      std::vector<zmq::pollitem_t> items;
      server.fill(items);
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(server.backlog() ? 0 : 20));
      server.process(
          items, 0,
          [&](const std::string&, Frames& f) {
            CHECK(view(f[1]) == std::to_string(got));
            ++got;
          },
          [](const std::string&, bool) {});
      backlog_seen = backlog_seen || server.backlog();
    }
    CHECK(backlog_seen);  // some turn stopped at its share with messages in the buffer
    CHECK_FALSE(server.backlog());
  }
  CHECK(got == kMessages);
  std::filesystem::remove_all(dir);
}
