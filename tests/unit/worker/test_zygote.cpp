// check_answer: the zygote's reply to the broker's "check KEY HEX-ENV-ID ALIASES STRICT-KWARGS" (a
// make that found the pool at --max-workers), from host.py's check_env_id.
#include <catch2/catch.hpp>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "protocol/token.hpp"
#include "worker/host.hpp"
#include "worker/zygote.hpp"

using gymfarm::protocol::from_hex;
using gymfarm::protocol::to_hex;
using gymfarm::worker::Args;
using gymfarm::worker::check_answer;
using gymfarm::worker::Host;

namespace {

std::vector<std::string> words(const std::string& line) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < line.size()) {
    const auto sp = std::min(line.find(' ', at), line.size());
    out.push_back(line.substr(at, sp - at));
    at = sp + 1;
  }
  return out;
}

}  // namespace

TEST_CASE("check_answer: a registered id is ok, an unknown one is refused with its kind and error") {
  Host host{Args{}};
  CHECK(check_answer(host, "k1 " + to_hex("CartPole-v1") + " 1 0") == "check k1 ok\n");

  const std::string bad = check_answer(host, "k2 " + to_hex("NoSuchEnv-v0") + " 1 0");
  REQUIRE(bad.rfind("check k2 bad ", 0) == 0);
  REQUIRE(bad.back() == '\n');
  const auto f = words(bad.substr(0, bad.size() - 1));
  REQUIRE(f.size() == 6);
  const auto message = from_hex(f[3]), kind = from_hex(f[4]), error = from_hex(f[5]);
  REQUIRE(message);
  REQUIRE(kind);
  REQUIRE(error);
  CHECK(message->find("NoSuchEnv") != std::string::npos);
  CHECK(*kind == "not_found");
  CHECK(*error == "NameNotFound");

  // Parameters a Gymie make may not pass without a get_env hook.
  const std::string strict = check_answer(host, "k3 " + to_hex("CartPole-v1") + " 1 1");
  REQUIRE(strict.rfind("check k3 bad ", 0) == 0);
  CHECK(from_hex(words(strict)[4]) == std::optional<std::string>("params"));
}

TEST_CASE("check_answer: a line it cannot read leaves the decision to the make") {
  Host host{Args{}};
  CHECK(check_answer(host, "k4") == "check k4 ok\n");
  CHECK(check_answer(host, "k5 zz 1 0") == "check k5 ok\n");                       // not hex
  CHECK(check_answer(host, "k6 " + to_hex("a\xff") + " 1 0") == "check k6 ok\n");  // not UTF-8
  CHECK(check_answer(host, "k7 " + to_hex("NoSuchEnv-v0") + " 1 0 extra") == "check k7 ok\n");
  CHECK(PyErr_Occurred() == nullptr);
}
