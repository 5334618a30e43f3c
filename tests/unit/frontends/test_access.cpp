#include <catch2/catch.hpp>

#include "frontends/access.hpp"
#include "protocol/token.hpp"

using namespace gymfarm;

TEST_CASE("tokens are random 128-bit hex and compared exactly") {
  const auto a = protocol::new_token(), b = protocol::new_token();
  CHECK(a.size() == 32);
  CHECK(a != b);
  CHECK(protocol::token_equal(a, a));
  CHECK_FALSE(protocol::token_equal(a, b));
  CHECK_FALSE(protocol::token_equal(a, a.substr(0, 31)));
  CHECK_FALSE(protocol::token_equal(a, a + "x"));
  CHECK_FALSE(protocol::token_equal("", ""));
}

TEST_CASE("base64 round trips") {
  for (const std::string& s : std::vector<std::string>{"", "f", "fo", "foo", "foob", ":secret", std::string("\0\xff\x10", 3)}) {
    CHECK(frontends::base64_decode(frontends::base64_encode(s)) == s);
  }
  CHECK(frontends::base64_encode("foobar") == "Zm9vYmFy");
  CHECK_FALSE(frontends::base64_decode("not base64!"));
}

TEST_CASE("access: loopback names, origins, tokens") {
  frontends::AccessPolicy open;
  CHECK_FALSE(frontends::check_access(open, "127.0.0.1:5000", "", "", "/v1/envs/"));
  CHECK_FALSE(frontends::check_access(open, "localhost", "", "", "/"));
  CHECK_FALSE(frontends::check_access(open, "[::1]:5000", "", "", "/"));
  CHECK(frontends::check_access(open, "evil.example:5000", "", "", "/")->status == 403);
  CHECK(frontends::check_access(open, "127.0.0.1", "http://evil.example", "", "/")->status == 403);
  CHECK_FALSE(frontends::check_access(open, "127.0.0.1", "http://localhost:3000", "", "/"));
  open.allowed_origins = {"https://app.example"};
  CHECK_FALSE(frontends::check_access(open, "127.0.0.1", "https://app.example", "", "/"));

  frontends::AccessPolicy locked;
  locked.token = "0123456789abcdef0123456789abcdef";
  CHECK(frontends::check_access(locked, "farm.example", "", "", "/v1/envs/")->status == 401);
  CHECK_FALSE(frontends::check_access(locked, "farm.example", "", "Bearer " + locked.token, "/v1/envs/"));
  CHECK_FALSE(frontends::check_access(locked, "farm.example", "", "Basic " + frontends::base64_encode(":" + locked.token), "/"));
  CHECK_FALSE(frontends::check_access(locked, "farm.example", "", "", "/gym?x=1&token=" + locked.token));
  CHECK(frontends::check_access(locked, "farm.example", "", "Bearer nope", "/")->status == 401);
}
