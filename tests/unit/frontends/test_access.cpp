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
  for (const std::string& s :
       std::vector<std::string>{"", "f", "fo", "foo", "foob", ":secret", std::string("\0\xff\x10", 3)}) {
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
  CHECK_FALSE(frontends::check_access(locked, "farm.example", "",
                                      "Basic " + frontends::base64_encode(":" + locked.token), "/"));
  CHECK_FALSE(frontends::check_access(locked, "farm.example", "", "", "/gym?x=1&token=" + locked.token));
  CHECK(frontends::check_access(locked, "farm.example", "", "Bearer nope", "/")->status == 401);
}

TEST_CASE("access: Host is parsed, never prefix-matched (DNS rebinding)") {
  using frontends::is_local_host;
  for (const char* ok :
       {"localhost", "LOCALHOST", "localhost.", "localhost:5000", "localhost.:5000", "127.0.0.1", "127.0.0.1:5000",
        "127.255.255.254:1", "127.1.2.3:65535", "0.0.0.0", "0.0.0.0:5000", "[::1]", "[::1]:5000", "[::]", "[::]:5000",
        "[::ffff:127.0.0.1]", "[::ffff:127.9.8.7]:80", "[0:0:0:0:0:0:0:1]", "[::ffff:7f00:1]"}) {
    INFO(ok);
    CHECK(is_local_host(ok));
  }
  for (const char* bad : {"",
                          "127.attacker.example",
                          "127.attacker.example:5000",
                          "127.0.0.1.evil.com",
                          "127.0.0.1.",
                          "127.0.0",
                          "127.0.0.1.2",
                          "127.0.0.256",
                          "127.00.0.1",
                          "0177.0.0.1",
                          "127.0.0.01",
                          "1270.0.0.1",
                          "128.0.0.1",
                          "10.0.0.1",
                          "0x7f.0.0.1",
                          "2130706433",
                          "127.0.0.1:",
                          "127.0.0.1:0",
                          "127.0.0.1:65536",
                          "127.0.0.1:5000:5000",
                          "127.0.0.1:50a",
                          "127.0.0.1:+80",
                          "localhost.evil.com",
                          "localhost..",
                          "localhostx",
                          "evil-localhost",
                          "[::1",
                          "[::1]x",
                          "[::1]:",
                          "[::1]:99999",
                          "[::2]",
                          "[::ffff:128.0.0.1]",
                          "[::ffff:10.0.0.1]",
                          "[fe80::1%25lo]",
                          "[::1%lo]",
                          "::1",
                          "[]",
                          "local host",
                          "127.0.0.1 ",
                          " 127.0.0.1",
                          "127.0.0.1\r\nX: y"}) {
    INFO(bad);
    CHECK_FALSE(is_local_host(bad));
  }
}

TEST_CASE("access: Origin is parsed; 0.0.0.0 and [::] pages are not local") {
  using frontends::is_local_origin;
  for (const char* ok : {"http://localhost", "http://localhost:3000", "https://127.0.0.1:8443", "ws://[::1]:5000",
                         "wss://localhost.", "HTTP://LOCALHOST", "http://[::ffff:127.0.0.1]", "http://127.5.5.5"}) {
    INFO(ok);
    CHECK(is_local_origin(ok));
  }
  for (const char* bad : {"",
                          "null",
                          "http://127.evil.com",
                          "http://127.0.0.1.evil.com",
                          "http://evil.com",
                          "http://0.0.0.0",
                          "http://0.0.0.0:5000",
                          "http://[::]",
                          "http://[::]:5000",
                          "file://localhost",
                          "ftp://localhost",
                          "localhost",
                          "//localhost",
                          "http://localhost/",
                          "http://localhost/path",
                          "http://user@localhost",
                          "http://localhost:0",
                          "http://localhost:70000",
                          "http://localhost.evil.com",
                          "http://",
                          "http://127.0.0.1:80:80"}) {
    INFO(bad);
    CHECK_FALSE(is_local_origin(bad));
  }
}

TEST_CASE("access: the attack strings are refused 403; Gymie's 0.0.0.0 Host passes") {
  frontends::AccessPolicy open;
  CHECK(frontends::check_access(open, "127.attacker.example", "", "", "/v1/envs/")->status == 403);
  CHECK(frontends::check_access(open, "127.attacker.example:5000", "", "", "/gym")->status == 403);
  CHECK(frontends::check_access(open, "127.0.0.1:5000", "http://127.evil.com", "", "/gym")->status == 403);
  CHECK(frontends::check_access(open, "127.0.0.1:5000", "http://0.0.0.0:5000", "", "/gym")->status == 403);
  CHECK_FALSE(frontends::check_access(open, "0.0.0.0:5000", "", "", "/gym"));
  CHECK_FALSE(frontends::check_access(open, "[::]:5000", "", "", "/gym"));
  CHECK_FALSE(frontends::check_access(open, "127.0.0.1", "", "", "/v1/envs/"));
  open.allowed_origins = {"http://0.0.0.0:8080"};
  CHECK_FALSE(frontends::check_access(open, "0.0.0.0:5000", "http://0.0.0.0:8080", "", "/gym"));
  // a farm with a token (or --insecure-no-token) takes any Host; the Origin check still applies
  frontends::AccessPolicy any;
  any.any_host = true;
  CHECK_FALSE(frontends::check_access(any, "farm.example:5000", "", "", "/"));
  CHECK(frontends::check_access(any, "farm.example:5000", "http://127.evil.com", "", "/")->status == 403);
}

TEST_CASE("CORS is for the listed origins only, and a preflight needs no token") {
  frontends::AccessPolicy p;
  p.token = "0123456789abcdef0123456789abcdef";
  p.allowed_origins = {"http://app.example:8080"};
  CHECK(frontends::cors_origin(p, "http://app.example:8080") == "http://app.example:8080");
  CHECK(frontends::cors_origin(p, "http://app.example:8081").empty());
  CHECK(frontends::cors_origin(p, "http://localhost:3000").empty());
  CHECK(frontends::cors_origin(p, "").empty());
  CHECK(frontends::is_allowed_preflight(p, "OPTIONS", "127.0.0.1:5000", "http://app.example:8080", "POST"));
  CHECK_FALSE(frontends::is_allowed_preflight(p, "OPTIONS", "127.0.0.1:5000", "http://app.example:8080",
                                              ""));  // not a preflight
  CHECK_FALSE(frontends::is_allowed_preflight(p, "GET", "127.0.0.1:5000", "http://app.example:8080", "POST"));
  CHECK_FALSE(frontends::is_allowed_preflight(p, "OPTIONS", "127.0.0.1:5000", "http://evil.example", "POST"));
  frontends::AccessPolicy open = p;
  open.token.clear();
  CHECK_FALSE(
      frontends::is_allowed_preflight(open, "OPTIONS", "rebound.example:5000", "http://app.example:8080", "POST"));
}
