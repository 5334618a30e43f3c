#pragma once
// The HTTP + WebSocket gateway (Boost.Beast, compiled only in gateway.cpp). One port serves the
// Gymie WebSocket at /gym; every other path answers as Gymie-Server does. Each connection runs on
// its own thread with its own native-protocol client, so a slow env never stalls other clients.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "frontends/access.hpp"
#include "frontends/gymie.hpp"
#include "frontends/rest.hpp"

namespace zmq {
class context_t;
}

namespace gymfarm::frontends {

struct GatewayOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 5000;  // 0 picks a free port: Gymie at /gym, gym-http-api at /v1/
  int gymnasium_port = 40004;  // gymnasium-http-api dialect; 0 picks a free port, -1 turns it off
  std::string broker_endpoint;  // the native endpoint the gateway's clients connect to
  zmq::context_t* broker_context = nullptr;  // shared with the broker for an inproc:// endpoint
  std::chrono::milliseconds client_timeout{120000};
  GymieOptions gymie;
  std::size_t max_message_bytes = 4u << 20;  // WebSocket message and HTTP body limit
  std::size_t max_connections = 1024;
  std::chrono::seconds http_idle_timeout{120};  // a keep-alive connection idle this long is closed
  std::chrono::microseconds spin{200};  // busy-poll for the next request and for the farm's reply (--spin-us)
  RestOptions rest;
  AccessPolicy access;  // token and allowed origins; the gateway's own clients use the token too
};

class Gateway {
 public:
  explicit Gateway(GatewayOptions options);
  ~Gateway();  // stops
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Binds and starts accepting; returns the bound port. Throws with a clear message on failure.
  uint16_t start();
  // The gymnasium-http-api port once started (-1 when off).
  int gymnasium_port() const;
  // Stops accepting, ends every connection, waits for their threads.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gymfarm::frontends
