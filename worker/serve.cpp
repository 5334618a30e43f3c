#include "worker/serve.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include <pybind11/embed.h>

#include "protocol/frames.hpp"
#include "transport/frames.hpp"
#include "transport/stream.hpp"
#include "worker/slab_server.hpp"

namespace gymfarm::worker {

namespace verb = protocol::verb;
using transport::view;

namespace {

using HbClock = std::chrono::steady_clock;
// When the worker last sent a reply on its link (HbClock ticks): the broker takes any reply as a
// heartbeat, so a worker that keeps answering sends none.
std::atomic<HbClock::rep> g_last_reply{0};

}  // namespace

void heartbeat_loop(zmq::context_t& ctx, const Args& args, HeartbeatControl& ctl) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  gymfarm::transport::configure(s);
  s.set(zmq::sockopt::routing_id, args.identity + "#hb");
  s.connect(args.backend);
  auto period = std::chrono::milliseconds(100);
  auto next = HbClock::now();
  gymfarm::transport::Frames in;
  while (!ctl.stop.load()) {
    if (parent_gone(args.parent)) _exit(0);
    auto now = HbClock::now();
    if (now >= next) {
      const HbClock::time_point replied{HbClock::duration(g_last_reply.load())};
      if (now - replied >= period) gymfarm::transport::send(s, std::vector<std::string_view>{verb::kHeartbeat});
      next = now + period;
    }
    zmq::pollitem_t items[] = {{s.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, ctl.wake_fd, ZMQ_POLLIN, 0}};
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - now);
    try {  // at most 500 ms, so that a parent that is gone is seen
      zmq::poll(items, 2, std::clamp(wait, std::chrono::milliseconds(0), std::chrono::milliseconds(500)));
    } catch (const zmq::error_t&) {  // EINTR
    }
    while (gymfarm::transport::recv(s, in)) {
      if (in.size() != 2 || view(in[0]) != verb::kHeartbeat) continue;
      long ms = 0;
      const auto text = view(in[1]);
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), ms);
      if (ec != std::errc() || end != text.data() + text.size() || ms < 10 || ms > 600000) continue;
      period = std::chrono::milliseconds(ms);
      next = std::min(next, HbClock::now() + period);
    }
  }
}

void serve(const Args& args, Host& host) {
  const std::string info = host.ready_info();
  const int fd = gymfarm::transport::connect_unix(args.link);
  if (fd < 0) {
    std::fprintf(stderr, "[gymfarm-worker] cannot reach the broker at %s\n", args.link.c_str());
    return;
  }
  gymfarm::transport::StreamConn link(fd, 0);
  auto send = [&](const std::vector<std::string_view>& frames) {
    if (!link.send(frames)) return false;
    g_last_reply.store(HbClock::now().time_since_epoch().count());
    while (link.wants_write()) {  // a large reply: wait for the broker to drain it
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 500) < 0 || parent_gone(args.parent) || !link.flush()) return false;
    }
    return true;
  };
  if (!send({verb::kLink, args.identity}) || !send({verb::kReady, info})) return;

  using Event = gymfarm::worker::SlabServer::Event;
  const auto spin = std::chrono::microseconds(args.spin_us);
  link.accept_fds(true);  // slabs come from the broker with their descriptors
  gymfarm::worker::SlabServer slabs;
  const auto handle_slab = [&host](std::string_view v, std::string_view instance, std::string_view body,
                                   std::span<char> raw) {
    Reply r = host.handle(v, instance, body, raw);
    return gymfarm::worker::SlabReply{r.status == gymfarm::protocol::kStatusOk, std::move(r.body), r.raw};
  };
  gymfarm::transport::Frames in;
  while (true) {
    Event got;
    {
      py::gil_scoped_release nogil;
      got = slabs.wait(link, in, spin, std::chrono::milliseconds(500));
    }
    if (got == Event::Closed || got == Event::TooLarge || parent_gone(args.parent)) break;
    if (got == Event::Slab) {
      // The broker sees slab answers as it sees replies (a scan every 10 ms): no heartbeat needed.
      if (slabs.serve(handle_slab) > 0) g_last_reply.store(HbClock::now().time_since_epoch().count());
      continue;
    }
    if (got != Event::Message || in.empty()) continue;
    const auto v = view(in[0]);
    if (v == verb::kBye) break;
    if (v == verb::kSlab) {  // [slab, instance, owner?] + memfd and doorbell: for the make that follows
      const int memfd = link.take_fd();
      const int doorbell = link.take_fd();
      if (in.size() == 2 || in.size() == 3) {
        slabs.on_grant(std::string(view(in[1])), in.size() == 3 ? std::string(view(in[2])) : std::string(), memfd,
                       doorbell);
      } else {
        if (memfd >= 0) ::close(memfd);
        if (doorbell >= 0) ::close(doorbell);
      }
      continue;
    }
    if (v == verb::kStepMany) {
      // [step_many, "", rid, (instance, body)*] -> [reply, rid, ok, (status, body)*]: the steps of a
      // step_batch for this worker's envs, in one message each way (--envs-per-worker)
      if (in.size() < 5 || (in.size() - 3) % 2 != 0) continue;
      std::vector<Reply> replies;
      replies.reserve((in.size() - 3) / 2);
      for (std::size_t i = 3; i + 1 < in.size(); i += 2)
        replies.push_back(host.handle(verb::kStep, view(in[i]), view(in[i + 1])));
      std::vector<std::string_view> out{verb::kReply, view(in[2]), gymfarm::protocol::kStatusOk};
      for (const auto& r : replies) {
        out.push_back(r.status);
        out.push_back(r.body);
      }
      if (!send(out)) break;
      continue;
    }
    if (in.size() != 4) continue;
    const std::string instance(view(in[1]));
    Reply r;
    if (v == verb::kSpilled) {  // the reply a slab could not hold
      if (auto kept = slabs.take_spilled(instance)) {
        r = {kept->ok ? gymfarm::protocol::kStatusOk : gymfarm::protocol::kStatusErr, std::move(kept->body)};
      } else {
        r = {gymfarm::protocol::kStatusErr, error_body("bad_request", "no spilled reply is kept for this instance")};
      }
    } else {
      r = host.handle(v, instance, view(in[3]));
    }
    if (v == verb::kMake) slabs.made(instance, r.status == gymfarm::protocol::kStatusOk);
    if (v == verb::kClose) {
      slabs.closed(instance, error_body("unknown_instance", "instance '" + instance + "' was closed"));
    }
    if (!send({verb::kReply, view(in[2]), r.status, r.body})) break;
  }
  host.close_env();
}

void finish(HeartbeatControl& hbc, std::thread& hb, int rc) {
  hbc.stop = true;
  const uint64_t one = 1;
  if (hbc.wake_fd >= 0 && ::write(hbc.wake_fd, &one, sizeof one) < 0) {
    // it still sees `stop` within 500 ms
  }
  {
    py::gil_scoped_release nogil;
    hb.join();
  }
  std::fflush(nullptr);
  _exit(rc);
}

}  // namespace gymfarm::worker
