// The gateway's pure parts: connection book-keeping (ConnectionLimits) and the blocking pool.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "frontends/blocking_pool.hpp"
#include "frontends/connection_limits.hpp"

using namespace gymfarm::frontends;
using namespace std::chrono_literals;

TEST_CASE("connection limits: one address is refused past its limit, others still admitted") {
  ConnectionLimits limits({/*max_total=*/100, /*max_per_client=*/3});
  for (int i = 0; i < 3; ++i) REQUIRE(limits.admit("127.0.0.1") == Admission::Admitted);
  CHECK(limits.admit("127.0.0.1") == Admission::TooManyFromClient);
  CHECK(limits.from("127.0.0.1") == 3);  // a refusal is not counted
  CHECK(limits.admit("127.0.0.2") == Admission::Admitted);
  CHECK(limits.total() == 4);
  limits.release("127.0.0.1");
  CHECK(limits.admit("127.0.0.1") == Admission::Admitted);
}

TEST_CASE("connection limits: the total limit holds across addresses") {
  ConnectionLimits limits({3, 64});
  REQUIRE(limits.admit("10.0.0.1") == Admission::Admitted);
  REQUIRE(limits.admit("10.0.0.2") == Admission::Admitted);
  REQUIRE(limits.admit("10.0.0.3") == Admission::Admitted);
  CHECK(limits.admit("10.0.0.4") == Admission::TooManyInTotal);
  CHECK(limits.admit("10.0.0.1") == Admission::TooManyInTotal);
  limits.release("10.0.0.2");
  CHECK(limits.admit("10.0.0.4") == Admission::Admitted);
  CHECK(limits.total() == 3);
  CHECK(limits.clients() == 3);
}

TEST_CASE("connection limits: release forgets an address at zero and ignores strangers") {
  ConnectionLimits limits({10, 2});
  REQUIRE(limits.admit("::1") == Admission::Admitted);
  limits.release("::1");
  limits.release("::1");        // more than admitted
  limits.release("192.0.2.1");  // never admitted
  CHECK(limits.total() == 0);
  CHECK(limits.clients() == 0);
  CHECK(limits.admit("::1") == Admission::Admitted);
}

TEST_CASE("connection limits: zero means no limit") {
  ConnectionLimits limits({0, 0});
  for (int i = 0; i < 1000; ++i) REQUIRE(limits.admit("127.0.0.1") == Admission::Admitted);
  CHECK(limits.total() == 1000);
}

TEST_CASE("connection limits: admit and release from many threads keep the counts exact") {
  ConnectionLimits limits({0, 50});
  std::atomic<int> admitted{0}, refused{0};
  std::vector<std::thread> threads;
  threads.reserve(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        if (limits.admit("a") == Admission::Admitted) ++admitted;
        else ++refused;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(admitted == 50);
  CHECK(refused == 110);
  CHECK(limits.from("a") == 50);
}

TEST_CASE("blocking pool: grows on demand up to its cap and runs queued jobs in order") {
  BlockingPool pool({/*max_threads=*/3, 10s, {}});
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> started{0};
  std::vector<int> order;
  for (int i = 0; i < 3; ++i) {
    pool.post([&] {
      ++started;
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return release; });
    });
  }
  for (int i = 0; i < 5; ++i) {
    pool.post([&, i] {
      {
        std::lock_guard lock(mu);
        order.push_back(i);
      }
      cv.notify_all();
    });
  }
  for (int i = 0; i < 200 && started < 3; ++i) std::this_thread::sleep_for(5ms);
  CHECK(started == 3);
  CHECK(pool.threads() == 3);  // never past the cap
  CHECK(pool.queued() == 5);   // the rest wait
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  std::unique_lock lock(mu);
  cv.wait_for(lock, 5s, [&] { return order.size() == 5; });
  REQUIRE(order.size() == 5);
  std::sort(order.begin(), order.end());  // three threads take from one queue: all ran, once each
  CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE("blocking pool: idle threads retire and the exit hook runs on each") {
  std::atomic<int> exits{0};
  BlockingPool pool({4, 50ms, [&] { ++exits; }});
  std::atomic<int> ran{0};
  for (int i = 0; i < 4; ++i)
    pool.post([&] {
      ++ran;
      std::this_thread::sleep_for(20ms);
    });
  for (int i = 0; i < 400 && (ran < 4 || pool.threads() > 0); ++i) std::this_thread::sleep_for(5ms);
  CHECK(ran == 4);
  CHECK(pool.threads() == 0);
  CHECK(exits >= 1);
  // and it starts threads again afterwards
  std::atomic<bool> again{false};
  pool.post([&] { again = true; });
  for (int i = 0; i < 200 && !again; ++i) std::this_thread::sleep_for(5ms);
  CHECK(again);
}

TEST_CASE("blocking pool: stop drops queued jobs, waits for running ones, refuses new ones") {
  BlockingPool pool({1, 10s, {}});
  std::atomic<bool> running{false}, finished{false}, queued_ran{false};
  pool.post([&] {
    running = true;
    std::this_thread::sleep_for(100ms);
    finished = true;
  });
  pool.post([&] { queued_ran = true; });
  for (int i = 0; i < 200 && !running; ++i) std::this_thread::sleep_for(2ms);
  REQUIRE(running);
  CHECK(pool.stop(5s));
  CHECK(finished);
  CHECK_FALSE(queued_ran);
  CHECK_FALSE(pool.post([] {}));
  CHECK(pool.threads() == 0);
}

TEST_CASE("blocking pool: a bounded stop reports a job that outlives it") {
  BlockingPool pool({1, 10s, {}});
  std::atomic<bool> go{false};
  pool.post([&] {
    while (!go) std::this_thread::sleep_for(1ms);
  });
  for (int i = 0; i < 200 && pool.idle() + pool.threads() == 0; ++i) std::this_thread::sleep_for(2ms);
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(pool.stop(30ms));
  go = true;
  CHECK(pool.stop(5s));
}
