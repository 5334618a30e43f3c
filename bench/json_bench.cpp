// JSON in the gateway: nlohmann/json (what frontends/ uses) against the alternatives Debian ships,
// RapidJSON and simdjson, on the gateway's hot messages. Prints one JSON line (ns per operation);
// bench/harness.py puts it in the results, docs/benchmarks.md reads it against a gateway step.
//
// Parse: a Gymie step message and a gym-http-api step body, down to the action value.
// Write: a CartPole step reply in Python's json.dumps format: frontends' own writer (pyjson)
// against building an nlohmann object and dumping it, and RapidJSON's Writer.
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <simdjson.h>

#include "frontends/pyjson.hpp"
#include "protocol/value.hpp"

using namespace gymfarm;
using Clock = std::chrono::steady_clock;

namespace {

volatile long long sink = 0;

template <class F>
double ns_per_op(F&& f, int n = 200000) {
  for (int i = 0; i < n / 10; ++i) f();  // warm-up
  const auto t = Clock::now();
  for (int i = 0; i < n; ++i) f();
  return std::chrono::duration<double, std::nano>(Clock::now() - t).count() / n;
}

// The benchmark; main reports what it throws.
int run() {
  const std::string gymie =
      R"({"method": "step", "params": {"instance_id": "3f2c9a7be01d4c56a8e9f0b1c2d3e4f5", "action": 1, "render": false}})";
  const std::string rest = R"({"action": 1, "render": false})";
  const protocol::Value obs(protocol::Array{protocol::Value(0.0273956), protocol::Value(-0.0061112),
                                            protocol::Value(0.0307284), protocol::Value(-0.0209932)});
  protocol::Value reply(protocol::Map{});
  reply.set("observation", obs);
  reply.set("reward", 1.0);
  reply.set("done", false);
  reply.set("info", protocol::Value(protocol::Map{}));

  auto nl_parse = [&](const std::string& s) {
    frontends::Json j = frontends::Json::parse(s, nullptr, false);
    const auto& p = j.contains("params") ? j["params"] : j;
    sink = sink + frontends::from_json(p["action"]).as_int();
  };
  auto rj_parse = [&](const std::string& s) {
    rapidjson::Document d;
    d.Parse(s.data(), s.size());
    const rapidjson::Value& p = d.HasMember("params") ? d["params"] : d;
    sink = sink + p["action"].GetInt64();
  };
  simdjson::ondemand::parser sp;
  const simdjson::padded_string gymie_p(gymie), rest_p(rest);
  auto sj_parse = [&](const simdjson::padded_string& s, bool nested) {
    auto doc = sp.iterate(s);
    int64_t a = nested ? int64_t(doc["params"]["action"]) : int64_t(doc["action"]);
    sink = sink + a;
  };

  std::string out;
  auto own_write = [&] {
    out.clear();
    frontends::write_json(out, reply);
    sink = sink + static_cast<long long>(out.size());
  };
  auto nl_write = [&] {
    frontends::Json j;
    j["observation"] = {0.0273956, -0.0061112, 0.0307284, -0.0209932};
    j["reward"] = 1.0;
    j["done"] = false;
    j["info"] = frontends::Json::object();
    out = j.dump();
    sink = sink + static_cast<long long>(out.size());
  };
  auto rj_write = [&] {
    rapidjson::StringBuffer sb;
    rapidjson::Writer<rapidjson::StringBuffer> w(sb);
    w.StartObject();
    w.Key("observation");
    w.StartArray();
    for (double x : {0.0273956, -0.0061112, 0.0307284, -0.0209932}) w.Double(x);
    w.EndArray();
    w.Key("reward");
    w.Double(1.0);
    w.Key("done");
    w.Bool(false);
    w.Key("info");
    w.StartObject();
    w.EndObject();
    w.EndObject();
    sink = sink + static_cast<long long>(sb.GetSize());
  };

  std::printf(
      "{\"parse_gymie_ns\": {\"nlohmann\": %.0f, \"rapidjson\": %.0f, \"simdjson\": %.0f}, "
      "\"parse_rest_ns\": {\"nlohmann\": %.0f, \"rapidjson\": %.0f, \"simdjson\": %.0f}, "
      "\"write_reply_ns\": {\"gymfarm_pyjson\": %.0f, \"nlohmann\": %.0f, \"rapidjson\": %.0f}}\n",
      ns_per_op([&] { nl_parse(gymie); }), ns_per_op([&] { rj_parse(gymie); }),
      ns_per_op([&] { sj_parse(gymie_p, true); }), ns_per_op([&] { nl_parse(rest); }),
      ns_per_op([&] { rj_parse(rest); }), ns_per_op([&] { sj_parse(rest_p, false); }), ns_per_op(own_write),
      ns_per_op(nl_write), ns_per_op(rj_write));
  return 0;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "json_bench: %s\n", e.what());
    return 1;
  }
}
