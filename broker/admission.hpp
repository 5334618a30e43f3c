#pragma once
// Who may use what, and how much: each instance's owner (only the client that made it may use it,
// unless it was made shared; the gateway's clients count as one, sessions.hpp principal()), the
// instances each client holds (--max-instances-per-client) and its requests in flight
// (--max-inflight-per-client). Keys are client keys (sessions.hpp). The hello and the token are
// checked by the broker loop with the SessionTable before anything reaches here.
#include <cstddef>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/sessions.hpp"

namespace gymfarm::broker {

class Admission {
 public:
  struct Limits {
    std::size_t max_instances_per_client = 0;  // 0 = no limit
    std::size_t max_inflight_per_client = 0;   // 0 = no limit
  };
  struct Owner {
    std::string client;    // the key of the client that made it
    bool shared = false;   // made with `shared: true`: any client may use it
    SessionLabel session;  // how its session was shown when it was made (it may end before the instance)
  };

  explicit Admission(Limits limits) : limits_(limits) {}
  const Limits& limits() const { return limits_; }

  // One more request of `client` in flight: the number it counts for (0 without a limit), or
  // nothing when the client is at its limit (then nothing is counted).
  bool begin(const std::string& client, std::size_t& counted);
  // A request that counted `counted` is answered.
  void settle(const std::string& client, std::size_t counted);
  std::size_t in_flight(const std::string& client) const;

  // Whether `client` may make another instance, and how many it holds.
  bool may_make(const std::string& client) const;
  std::size_t holds(const std::string& client) const;
  // An instance was made by `client`; forgotten when it is closed or its worker dies.
  void made(const std::string& instance, const std::string& client, bool shared, SessionLabel session = {});
  void forget(const std::string& instance);
  const Owner* owner(const std::string& instance) const;
  // The instances `client` made.
  std::vector<std::string> instances_of(const std::string& client) const;

  // An instance nobody owns (unknown, or not made through here) may be used by anyone: whether it
  // exists is the routing table's business.
  bool may_use(const std::string& instance, const std::string& client) const;

 private:
  Limits limits_;
  std::unordered_map<std::string, Owner> owners_;          // instance -> who made it
  std::unordered_map<std::string, std::size_t> held_;      // client -> instances it holds
  std::unordered_map<std::string, std::size_t> inflight_;  // client -> requests not yet answered
};

}  // namespace gymfarm::broker
