#include <catch2/catch.hpp>

#include <string>

#include "client/client.hpp"
#include "frontends/pyjson.hpp"
#include "frontends/rest.hpp"

using namespace gymfarm;
using protocol::Map;
using protocol::Value;

namespace {

// A farm that serves one never-terminating env (so episodes run until a budget stops them) and
// counts the steps it was asked for.
class EndlessFarm final : public client::Caller {
 public:
  int64_t steps = 0;
  Value last_reset_body;
  Value call(std::string_view verb, std::string_view, const Value& body) override {
    const Value obs(protocol::Tensor::from<float>(protocol::DType::Float32, {0.5f, -1.0f}, {2}));
    if (verb == "make")
      return Value(Map{{"instance_id", std::string(32, 'a')}, {"spec", Value(Map{{"id", "Endless-v0"}})}});
    if (verb == "reset") {
      last_reset_body = body;
      return Value(Map{{"obs", obs}, {"info", Value(Map{})}});
    }
    if (verb == "sample") return Value(Map{{"value", int64_t{0}}});
    if (verb == "step") {
      ++steps;
      return Value(
          Map{{"obs", obs}, {"reward", 1.0}, {"terminated", false}, {"truncated", true}, {"info", Value(Map{})}});
    }
    return Value(Map{});
  }
};

struct Fixture {
  EndlessFarm farm;
  frontends::RestRegistry registry;
  frontends::RestSession session{farm, registry, frontends::RestDialect::GymnasiumHttpApi, {}};
  std::string id;
  Fixture() {
    const auto made = session.handle({"POST", "/v1/envs/", R"({"env_id": "Endless-v0"})", "application/json"});
    REQUIRE(made.status == 200);
    id = frontends::Json::parse(made.body)["instance_id"].get<std::string>();
  }
  frontends::HttpReply episodes(const std::string& body, std::function<bool()> gone = {}) {
    frontends::HttpRequest req{"POST", "/v1/envs/" + id + "/episodes/", body, "application/json"};
    req.client_gone = std::move(gone);
    return session.handle(req);
  }
};

}  // namespace

TEST_CASE("rest episodes: count above the cap is a 400, before any work") {
  Fixture f;
  for (const char* body : {R"({"count": 101})", R"({"count": 10000})", R"({"count": "101"})", R"({"count": -1})",
                           R"({"count": 18446744073709551615})", R"({"count": 1.5})"}) {
    INFO(body);
    const auto r = f.episodes(body);
    CHECK(r.status == 400);
    CHECK(r.body.find("'count' must be an integer from 0 to 100") != std::string::npos);
  }
  CHECK(f.farm.steps == 0);
}

TEST_CASE("rest episodes: a request plays at most kMaxEpisodeSteps steps in all") {
  Fixture f;
  const auto r = f.episodes(R"({"count": 100})");
  REQUIRE(r.status == 200);
  CHECK(f.farm.steps == frontends::kMaxEpisodeSteps);
  const auto j = frontends::Json::parse(r.body);
  CHECK(j["episodes"].size() == 1);  // the first episode never terminates: cut at the budget
  CHECK(j["episodes"][0].size() == static_cast<std::size_t>(frontends::kMaxEpisodeSteps) + 1);
  bool cut = false;
  for (const auto& [k, v] : r.headers) cut = cut || k == "Gymfarm-Episodes-Cut";
  CHECK(cut);
}

TEST_CASE("rest episodes: the loop stops when the client goes") {
  Fixture f;
  int asked = 0;
  const auto r = f.episodes(R"({"count": 100})", [&] { return ++asked > 50; });
  CHECK(r.status == 499);
  CHECK(f.farm.steps < 50);
  CHECK(asked == 51);  // checked once per step (and once per episode), then nothing more
}

TEST_CASE("rest seeds: negative, fractional and oversized seeds are 400; 0..2**64-1 pass") {
  Fixture f;
  const std::string reset = "/v1/envs/" + f.id + "/reset/";
  for (const char* body :
       {R"({"seed": -1})", R"({"seed": -9223372036854775808})", R"({"seed": 18446744073709551616})", R"({"seed": 1.5})",
        R"({"seed": "abc"})", R"({"seed": "-1"})", R"({"seed": true})", R"({"seed": [1]})"}) {
    INFO(body);
    const auto r = f.session.handle({"POST", reset, body, "application/json"});
    CHECK(r.status == 400);
    CHECK(r.body.find("'seed'") != std::string::npos);
    const auto e = f.episodes(std::string(R"({"count": 1, "seed": )") + frontends::Json::parse(body)["seed"].dump() +
                              "}");
    CHECK(e.status == 400);
  }
  CHECK(f.session.handle({"POST", reset, R"({"seed": 18446744073709551615})", "application/json"}).status == 200);
  CHECK(std::get<uint64_t>(f.farm.last_reset_body.find("seed")->storage()) == 18446744073709551615ull);
  CHECK(f.session.handle({"POST", reset, R"({"seed": " 2718 "})", "application/json"}).status == 200);
  CHECK(f.farm.last_reset_body.find("seed")->as_int() == 2718);

  EndlessFarm farm;
  frontends::RestRegistry registry;
  frontends::RestSession openai(farm, registry, frontends::RestDialect::GymHttpApi, {});
  CHECK(openai.handle({"POST", "/v1/envs/", R"({"env_id": "Endless-v0", "seed": -5})", "application/json"}).status ==
        400);
  CHECK(openai.handle({"POST", "/v1/envs/", R"({"env_id": "Endless-v0", "seed": 5})", "application/json"}).status ==
        200);
}

TEST_CASE("rest openapi: each port documents its own dialect's routes only") {
  const auto openai = frontends::Json::parse(frontends::openapi_document(frontends::RestDialect::GymHttpApi));
  const auto gymnasium = frontends::Json::parse(frontends::openapi_document(frontends::RestDialect::GymnasiumHttpApi));
  CHECK(openai["paths"].contains("/v1/envs/{instance_id}/monitor/start/"));
  CHECK_FALSE(openai["paths"].contains("/v1/envs/{instance_id}/transitions/"));
  CHECK(gymnasium["paths"].contains("/v1/envs/{instance_id}/transitions/"));
  CHECK_FALSE(gymnasium["paths"].contains("/v1/envs/{instance_id}/monitor/start/"));
  const auto& close = openai["paths"]["/v1/envs/{instance_id}/close/"]["post"]["responses"];
  CHECK(close.contains("204"));
  CHECK_FALSE(close.contains("200"));
  const auto& del = gymnasium["paths"]["/v1/envs/{instance_id}"]["delete"]["responses"];
  CHECK(del.contains("200"));
  const auto& episodes = gymnasium["paths"]["/v1/envs/{instance_id}/episodes/"]["post"];
  CHECK(episodes["requestBody"]["content"]["application/json"]["schema"]["required"] ==
        frontends::Json::array({"count"}));
}

TEST_CASE("rest openapi: an optional parameter's schema takes what get_optional_param reads as absent") {
  using frontends::Json;
  const Json empty_array = {{"type", "array"}, {"maxItems", 0}};
  const Json empty_string = {{"type", "string"}, {"maxLength", 0}};
  auto body = [](const Json& doc, const std::string& path) -> const Json& {
    return doc.at("paths")
        .at(path)
        .at("post")
        .at("requestBody")
        .at("content")
        .at("application/json")
        .at("schema")
        .at("properties");
  };
  auto takes_absent = [&](const Json& s) {
    if (!s.contains("anyOf")) return false;
    const Json& any = s.at("anyOf");
    return s.value("nullable", false) && std::find(any.begin(), any.end(), empty_array) != any.end() &&
           std::find(any.begin(), any.end(), empty_string) != any.end();
  };
  const auto openai = Json::parse(frontends::openapi_document(frontends::RestDialect::GymHttpApi));
  const auto gymnasium = Json::parse(frontends::openapi_document(frontends::RestDialect::GymnasiumHttpApi));
  CHECK(takes_absent(body(openai, "/v1/envs/")["seed"]));
  CHECK(takes_absent(body(gymnasium, "/v1/envs/{instance_id}/reset/")["seed"]));
  CHECK(takes_absent(body(gymnasium, "/v1/envs/{instance_id}/episodes/")["seed"]));
  for (const char* p : {"max_episode_steps", "auto_reset", "disable_env_checker", "kwargs"}) {
    CHECK(takes_absent(body(gymnasium, "/v1/envs/")[p]));
  }
}
