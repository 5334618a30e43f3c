// A C++ trainer for tests/python/test_cpp_lease.py: connects over TCP (never the local socket),
// makes N envs, prints their instance ids and "ready", then idles until it is killed.
//   gymfarm_lease_client ENDPOINT N [--keep-instances] [--no-lease]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "client/client.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s ENDPOINT N [--keep-instances] [--no-lease]\n", argv[0]);
    return 2;
  }
  gymfarm::client::ClientOptions o;
  o.local = false;  // the lease is what this exercises: the farm sees a local socket close by itself
  o.name = "gymfarm-lease-test";
  if (const char* t = std::getenv("GYMFARM_TOKEN"); t && *t) o.token = t;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--keep-instances") o.keep_instances = true;
    else if (a == "--no-lease") o.lease = false;
  }
  try {
    gymfarm::client::Client c(argv[1], o);
    const long n = std::strtol(argv[2], nullptr, 10);
    for (long i = 0; i < n; ++i) std::printf("%s\n", c.make("CartPole-v1").instance_id.c_str());
    std::printf("lease_ms %lld\nready\n", static_cast<long long>(c.lease().count()));
    std::fflush(stdout);
    while (true) std::this_thread::sleep_for(std::chrono::seconds(1));  // idle: only the lease thread talks
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lease client: %s\n", e.what());
    return 1;
  }
}
