// The dispatcher with fake links on a ManualClock: a request to its instance's worker and its reply
// back, one request in flight per worker, ownership, step_batch fanned out and reassembled in
// order, a pipe that refuses messages past the grace.
#include <catch2/catch.hpp>

#include <deque>

#include "broker/dispatcher.hpp"
#include "broker/sessions.hpp"
#include "protocol/codec.hpp"
#include "protocol/frames.hpp"

using namespace gymfarm::broker;
using gymfarm::protocol::ErrorCode;
using gymfarm::transport::Frames;
using gymfarm::transport::str;
using namespace std::chrono_literals;
namespace verb = gymfarm::protocol::verb;

namespace {

struct FakeLinks final : DispatchLinks {
  struct Sent {
    std::string identity;
    std::vector<std::string> frames;
  };
  bool to_worker(const std::string& identity, const std::vector<std::string_view>& frames) override {
    if (refuse) return false;
    to_workers.push_back({identity, {frames.begin(), frames.end()}});
    return true;
  }
  bool to_client(Frames& frames) override {
    std::vector<std::string> f;
    for (const auto& m : frames) f.push_back(str(m));
    to_clients.push_back(std::move(f));
    return true;
  }
  void kill_worker(std::size_t w, std::string why) override { killed.emplace_back(w, std::move(why)); }
  const std::string* kill_reason(int) const override { return nullptr; }
  bool refuse = false;
  std::vector<Sent> to_workers;
  std::vector<std::vector<std::string>> to_clients;
  std::vector<std::pair<std::size_t, std::string>> killed;
};

std::string alice() { return client_key(ClientPath::Tcp, "alice", "0000000000000001"); }
std::string bob() { return client_key(ClientPath::Tcp, "bob", "0000000000000002"); }

ErrorCode error_code(const std::string& body) {
  gymfarm::protocol::Value v;
  std::string err;
  REQUIRE(gymfarm::protocol::decode(body, v, err));
  return gymfarm::protocol::Error::from_value(v).code;
}

// Two ready workers, with one instance each of alice's: "a" on worker 0, "b" on worker 1.
struct Farm {
  Farm() : registry(2, clock), admission({0, 0}), dispatcher(registry, routes, admission, clock, links, {}) {
    clock.advance(1h);  // the registry takes a zero time point for "not yet" (steady time is never zero)
    for (std::size_t i = 0; i < 2; ++i) {
      registry.spawned(i, "w" + std::to_string(i) + ".0", 100 + static_cast<int>(i));
      registry.ready(i);
    }
    for (auto [instance, w] : {std::pair{"a", 0}, std::pair{"b", 1}}) {
      REQUIRE(routes.add(instance, w, "CartPole-v1"));
      REQUIRE(registry.assign(w, instance, "CartPole-v1"));
      admission.made(instance, alice(), false);
    }
  }
  Request step(const std::string& client, const std::string& rid, const std::string& instance) {
    Request r;
    r.client = client;
    r.client_rid = rid;
    r.verb = std::string(verb::kStep);
    r.instance = instance;
    r.body = "action";
    return r;
  }
  // The worker answers the request it was sent as `n`-th.
  bool reply(std::size_t n, std::string_view status, std::string_view body) {
    const auto& sent = links.to_workers.at(n);
    Frames f;
    for (std::string_view p :
         {std::string_view(sent.identity), verb::kReply, std::string_view(sent.frames.at(2)), status, body}) {
      f.push_back(gymfarm::transport::payload(p));
    }
    return dispatcher.on_reply(*registry.by_identity(sent.identity), f);
  }
  ManualClock clock;
  WorkerRegistry registry;
  RoutingTable routes;
  Admission admission;
  FakeLinks links;
  Dispatcher dispatcher;
};

}  // namespace

TEST_CASE("dispatcher: a step goes to its instance's worker and the reply back to its client") {
  Farm farm;
  farm.dispatcher.route(farm.step(alice(), "r1", "b"));
  REQUIRE(farm.links.to_workers.size() == 1);
  CHECK(farm.links.to_workers[0].identity == "w1.0");
  CHECK(farm.links.to_workers[0].frames[0] == "step");
  CHECK(farm.links.to_workers[0].frames[1] == "b");
  CHECK(farm.links.to_workers[0].frames[3] == "action");
  CHECK(farm.registry.slot(1).in_flight);
  CHECK(farm.links.to_clients.empty());
  CHECK_FALSE(farm.reply(0, "ok", "obs"));
  REQUIRE(farm.links.to_clients.size() == 1);
  CHECK(farm.links.to_clients[0] == std::vector<std::string>{alice(), "r1", "ok", "obs"});
  CHECK_FALSE(farm.registry.slot(1).in_flight);
  CHECK(farm.registry.slot(1).steps == 1);
  CHECK_FALSE(farm.reply(0, "ok", "again"));  // a stale reply is dropped
  CHECK(farm.links.to_clients.size() == 1);
}

TEST_CASE("dispatcher: one request in flight per worker, the next one sent when it is answered") {
  Farm farm;
  farm.dispatcher.route(farm.step(alice(), "r1", "a"));
  farm.dispatcher.route(farm.step(alice(), "r2", "a"));
  CHECK(farm.links.to_workers.size() == 1);
  CHECK(farm.registry.slot(0).queue.size() == 1);
  farm.reply(0, "ok", "one");
  REQUIRE(farm.links.to_workers.size() == 2);
  CHECK(farm.links.to_workers[1].frames[2] != farm.links.to_workers[0].frames[2]);  // a fresh rid
  farm.reply(1, "ok", "two");
  REQUIRE(farm.links.to_clients.size() == 2);
  CHECK(farm.links.to_clients[1][1] == "r2");
}

TEST_CASE("dispatcher: another client's instance is unknown to a stranger") {
  Farm farm;
  farm.dispatcher.route(farm.step(bob(), "r1", "a"));
  farm.dispatcher.route(farm.step(alice(), "r2", "nope"));
  CHECK(farm.links.to_workers.empty());
  REQUIRE(farm.links.to_clients.size() == 2);
  CHECK(farm.links.to_clients[0][2] == "err");
  CHECK(error_code(farm.links.to_clients[0][3]) == ErrorCode::UnknownInstance);
  CHECK(error_code(farm.links.to_clients[1][3]) == ErrorCode::UnknownInstance);
}

TEST_CASE("dispatcher: a step_batch fans out by worker and is answered once, in request order") {
  Farm farm;
  Request head;
  head.client = alice();
  head.client_rid = "rb";
  head.verb = std::string(verb::kStepBatch);
  Frames f;
  for (std::string_view p :
       {verb::kStepBatch, std::string_view(""), std::string_view("rb"), std::string_view(""), std::string_view("a"),
        std::string_view("act-a"), std::string_view("b"), std::string_view("act-b")}) {
    f.push_back(gymfarm::transport::payload(p));
  }
  farm.dispatcher.on_batch(head, f);
  REQUIRE(farm.links.to_workers.size() == 2);
  CHECK(farm.links.to_workers[0].frames[3] == "act-a");
  CHECK(farm.links.to_workers[1].frames[3] == "act-b");
  CHECK(farm.dispatcher.open_batches() == 1);
  farm.reply(1, "ok", "obs-b");  // the second part first
  CHECK(farm.links.to_clients.empty());
  farm.reply(0, "err", "boom");
  REQUIRE(farm.links.to_clients.size() == 1);
  CHECK(farm.links.to_clients[0] == std::vector<std::string>{alice(), "rb", "ok", "err", "boom", "ok", "obs-b"});
  CHECK(farm.dispatcher.open_batches() == 0);
}

TEST_CASE("dispatcher: a pipe that refuses a request keeps it queued, and past the grace the worker is killed") {
  Farm farm;
  farm.links.refuse = true;
  farm.dispatcher.route(farm.step(alice(), "r1", "a"));
  CHECK(farm.registry.slot(0).queue.size() == 1);
  CHECK(farm.links.to_clients.empty());
  farm.clock.advance(500ms);
  farm.dispatcher.retry_refused();
  CHECK(farm.registry.slot(0).queue.size() == 1);
  CHECK(farm.links.killed.empty());
  farm.clock.advance(500ms);
  farm.dispatcher.retry_refused();
  REQUIRE(farm.links.killed.size() == 1);
  CHECK(farm.links.killed[0].first == 0);
  REQUIRE(farm.links.to_clients.size() == 1);
  CHECK(error_code(farm.links.to_clients[0][3]) == ErrorCode::WorkerCrashed);
  CHECK(farm.registry.slot(0).queue.empty());
}

TEST_CASE("dispatcher: a close that is answered frees the instance and fails what was queued for it") {
  Farm farm;
  Request close;
  close.client = alice();
  close.client_rid = "rc";
  close.verb = std::string(verb::kClose);
  close.instance = "a";
  farm.dispatcher.route(std::move(close));
  farm.dispatcher.route(farm.step(alice(), "r2", "a"));
  CHECK(farm.reply(0, "ok", ""));  // room for a waiting make
  REQUIRE(farm.links.to_clients.size() == 2);
  CHECK(farm.links.to_clients[0][1] == "rc");
  CHECK(error_code(farm.links.to_clients[1][3]) == ErrorCode::UnknownInstance);
  CHECK_FALSE(farm.routes.find("a"));
  CHECK(farm.registry.slot(0).state == WorkerState::Idle);
}
