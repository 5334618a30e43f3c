#include "broker/dispatcher.hpp"

#include <algorithm>
#include <deque>
#include <unordered_map>

#include "protocol/codec.hpp"
#include "protocol/frames.hpp"
#include "protocol/step_vec.hpp"

namespace gymfarm::broker {

using protocol::Error;
using protocol::ErrorCode;
using protocol::make_error;
using protocol::Value;
namespace verb = protocol::verb;
using transport::Frames;
using transport::payload;
using transport::view;

namespace {

constexpr auto kUnsendableGrace = std::chrono::seconds(1);  // a live worker's pipe may refuse a message this long

}  // namespace

Dispatcher::Dispatcher(WorkerRegistry& registry, RoutingTable& routes, Admission& admission, const Clock& clock,
                       DispatchLinks& links, DispatchOptions options, Log log)
    : registry_(registry),
      routes_(routes),
      admission_(admission),
      clock_(clock),
      links_(links),
      opt_(options),
      log_fn_(std::move(log)) {}

Duration Dispatcher::timeout_for(std::string_view v) const {
  return verb_timeout(v, opt_.step_timeout, opt_.make_timeout);
}

void Dispatcher::retry_refused() {
  if (!refused_sends_) return;
  refused_sends_ = false;
  for (std::size_t i = 0; i < registry_.size(); ++i) {
    if (registry_.slot(i).unsendable_since != TimePoint{}) pump(i);
  }
}

void Dispatcher::send_client(const std::string& client, const std::string& rid, std::string_view status,
                             zmq::message_t body, const std::string* slab_instance) {
  if (client.empty()) return;  // the broker's own request (idle close)
  Frames out;
  out.reserve(4);
  for (std::string_view f : {std::string_view(client), std::string_view(rid), status}) out.push_back(payload(f));
  out.push_back(std::move(body));
  const bool sent = slab_instance ? links_.to_client_with_slab(out, *slab_instance) : links_.to_client(out);
  if (!sent && opt_.verbose) log("dropped a reply to a gone client");
}

void Dispatcher::settle(const Request& r) { admission_.settle(r.client, r.counted); }

void Dispatcher::respond(const Request& r, std::string_view status, zmq::message_t body) {
  settle(r);
  if (const auto* v = r.as<Request::VecShare>()) return vec_result(v->batch, v->rows, status, std::move(body));
  if (const auto* m = r.as<Request::StepMany>()) {  // failed as a whole: every part gets the error
    for (const auto& p : m->parts) {
      zmq::message_t copy;
      copy.copy(body);
      batch_result(m->batch, p.index, status, std::move(copy));
    }
    return;
  }
  if (const auto* b = r.as<Request::BatchPart>()) return batch_result(b->batch, b->index, status, std::move(body));
  if (!r.client.empty()) count(r.verb, status, &body, r.received);
  const auto* make = r.as<Request::Make>();
  const bool slab = make && make->slab && status == protocol::kStatusOk;
  send_client(r.client, r.client_rid, status, std::move(body), slab ? &r.instance : nullptr);
}

void Dispatcher::count(std::string_view verb, std::string_view status, const zmq::message_t* body, TimePoint received) {
  if (!counters_) return;
  std::string code(protocol::kStatusOk);
  if (status != protocol::kStatusOk) {
    code = "unknown";
    Value e;
    std::string err;
    if (body && protocol::decode(std::string_view(static_cast<const char*>(body->data()), body->size()), e, err)) {
      if (const Value* c = e.find("code"); c && c->is_string()) code = c->as_string();
    }
  }
  counters_->answered(verb, code, received == TimePoint{} ? Duration{} : clock_.now() - received);
}

// One worker's part of a step_vec is answered; the reply goes out when the last part is:
// [rid, ok, (rows, status, body)*] with rows a msgpack array of the client's env indices.
void Dispatcher::vec_result(uint64_t id, const std::vector<std::size_t>& rows, std::string_view status,
                            zmq::message_t body) {
  auto it = vec_batches_.find(id);
  if (it == vec_batches_.end()) return;
  VecBatch& b = it->second;
  protocol::Array idx;
  for (auto r : rows) idx.push_back(Value(static_cast<uint64_t>(r)));
  b.parts.push_back(payload(protocol::encode(Value(std::move(idx)))));
  b.parts.push_back(payload(status));
  b.parts.push_back(std::move(body));
  if (--b.remaining > 0) return;
  Frames out;
  for (std::string_view f : {std::string_view(b.client), std::string_view(b.client_rid), protocol::kStatusOk}) {
    out.push_back(payload(f));
  }
  for (auto& m : b.parts) out.push_back(std::move(m));
  links_.to_client(out);
  count(verb::kStepVec, protocol::kStatusOk, nullptr, b.received);
  vec_batches_.erase(it);
}

// One part of a step_batch is answered; the reply goes out when the last part is.
void Dispatcher::batch_result(uint64_t batch_id, std::size_t index, std::string_view status, zmq::message_t body) {
  auto it = batches_.find(batch_id);
  if (it == batches_.end()) return;
  Batch& b = it->second;
  b.results[index] = {std::string(status), std::move(body)};
  if (--b.remaining > 0) return;
  Frames out;
  for (std::string_view f : {std::string_view(b.client), std::string_view(b.client_rid), protocol::kStatusOk}) {
    out.push_back(payload(f));
  }
  for (auto& [st, m] : b.results) {
    out.push_back(payload(st));
    out.push_back(std::move(m));
  }
  links_.to_client(out);
  count(verb::kStepBatch, protocol::kStatusOk, nullptr, b.received);
  batches_.erase(it);
}

void Dispatcher::fail(const Request& r, const Error& e) {
  respond(r, protocol::kStatusErr, payload(protocol::encode(e.to_value())));
}

// Sends r to worker w. False when the worker's pipe takes nothing now: r is left in `r` for the
// caller to keep queued (pump retries every turn; a worker that is gone for good is reaped, one
// that is wedged loses its heartbeats, and either way its queue is answered then).
bool Dispatcher::dispatch(std::size_t w, Request& r) {
  auto& s = registry_.slot(w);
  const uint64_t rid = next_rid_++;
  const std::string rid_bytes = protocol::encode_rid(rid);
  const Duration timeout = timeout_for(r.verb);
  bool sent = false;
  if (const auto* m = r.as<Request::StepMany>()) {
    std::vector<std::string_view> frames{verb::kStepMany, "", rid_bytes};
    for (const auto& p : m->parts) {
      frames.push_back(p.instance);
      frames.push_back(p.body);
    }
    sent = links_.to_worker(s.identity, frames);
  } else {
    sent = links_.to_worker(s.identity, {r.verb, r.instance, rid_bytes, r.body});
  }
  if (!sent) {
    if (const std::string* why = links_.kill_reason(s.pid)) {  // killed, not reaped yet: say why
      fail(r, make_error(ErrorCode::WorkerCrashed, "the worker holding this instance was killed after " + *why));
      return true;
    }
    const auto now = clock_.now();
    if (s.unsendable_since == TimePoint{}) s.unsendable_since = now;
    if (now - s.unsendable_since < kUnsendableGrace) {
      refused_sends_ = true;
      return false;
    }
    // Its pipe took nothing for a whole grace period although the process lives: replace it,
    // and answer the request now rather than at the client's timeout.
    const std::string cause = "its link took no message for 1 s";
    log("worker " + std::to_string(w) + ": " + cause + "; killing it");
    fail(r, make_error(ErrorCode::WorkerCrashed, "the worker holding this instance is unreachable: " + cause));
    links_.kill_worker(w, cause);
    return true;
  }
  s.unsendable_since = TimePoint{};
  registry_.begin(w, std::move(r), rid, timeout);
  return true;
}

// Sends the next queued request of worker w, if it is free.
void Dispatcher::pump(std::size_t w) {
  auto& s = registry_.slot(w);
  while (!s.in_flight && !s.queue.empty() && s.state == WorkerState::Assigned) {
    if (!dispatch(w, s.queue.front())) return;  // stays first in the queue; retried next turn
    s.queue.pop_front();
  }
}

bool Dispatcher::admit(Request& r) {
  if (admission_.begin(r.client, r.counted)) return true;
  Value d(protocol::Map{{"limit", static_cast<uint64_t>(opt_.max_inflight_per_client)}});
  fail(r, make_error(ErrorCode::Overloaded,
                     "this client has " + std::to_string(admission_.in_flight(r.client)) +
                         " requests in flight (--max-inflight-per-client)",
                     d));
  return false;
}

// The answer for an instance this client may not use or that has no route: its tombstone, or
// unknown_instance. Another client's live instance has no tombstone (a route and its owner are
// buried together), so a stranger gets the same answer as for an instance that does not exist.
Error Dispatcher::missing_instance(const std::string& instance) const {
  if (const Error* tomb = routes_.tombstone(instance)) return *tomb;
  Value d(protocol::Map{{"instance_id", instance}});
  return make_error(ErrorCode::UnknownInstance, "unknown instance_id '" + instance + "'", d);
}

void Dispatcher::route(Request r) {
  if (!admission_.may_use(r.instance, r.client)) return fail(r, missing_instance(r.instance));
  if (!admit(r)) return;
  auto w = routes_.find(r.instance);
  if (!w) return fail(r, missing_instance(r.instance));
  enqueue(*w, std::move(r));
}

void Dispatcher::enqueue(std::size_t w, Request r) {
  auto& s = registry_.slot(w);
  if (s.queue.size() >= opt_.max_queue_per_instance * registry_.capacity()) {
    Value d(protocol::Map{{"limit", static_cast<int64_t>(opt_.max_queue_per_instance)}});
    return fail(r, make_error(ErrorCode::Overloaded, "too many requests queued for this instance", d));
  }
  s.queue.push_back(std::move(r));
  pump(w);
}

void Dispatcher::on_batch(Request& head, Frames& f) {
  if (f.size() < 6 || (f.size() - 4) % 2 != 0) {
    return fail(head, make_error(ErrorCode::BadRequest, "step_batch needs one or more (instance, body) frame pairs"));
  }
  if (shutting_down_) return fail(head, make_error(ErrorCode::ShuttingDown, "the farm is shutting down"));
  const uint64_t id = next_batch_++;
  const std::size_t n = (f.size() - 4) / 2;
  Batch& b = batches_[id];
  b.client = head.client;
  b.client_rid = head.client_rid;
  b.received = head.received;
  b.results.resize(n);
  b.remaining = n;
  // Parts for a worker that hosts several of the batch's instances travel as one step_many.
  std::unordered_map<std::size_t, Request> grouped;
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < n; ++i) {
    Request part;
    part.client = head.client;
    part.client_rid = head.client_rid;
    part.verb = std::string(verb::kStep);
    part.instance = transport::str(f[4 + 2 * i]);
    part.body = transport::str(f[5 + 2 * i]);
    part.kind = Request::BatchPart{id, i};
    auto w = registry_.capacity() > 1 && admission_.may_use(part.instance, part.client) ? routes_.find(part.instance)
                                                                                        : std::nullopt;
    if (!w) {
      route(std::move(part));  // one env per worker, or unknown: answered on its own
      continue;
    }
    if (!admit(part)) continue;
    auto [it, fresh] = grouped.try_emplace(*w);
    Request& g = it->second;
    if (fresh) {
      order.push_back(*w);
      g.client = head.client;
      g.client_rid = head.client_rid;
      g.verb = std::string(verb::kStepMany);
      g.kind = Request::StepMany{id, {}};
    }
    g.counted += part.counted;
    std::get<Request::StepMany>(g.kind).parts.push_back({std::move(part.instance), std::move(part.body), i});
  }
  for (std::size_t w : order) {
    Request g = std::move(grouped[w]);
    if (auto& parts = std::get<Request::StepMany>(g.kind).parts; parts.size() == 1) {  // a lone part: a plain step
      Request::StepMany::Part p = std::move(parts[0]);
      g.verb = std::string(verb::kStep);
      g.instance = std::move(p.instance);
      g.body = std::move(p.body);
      g.kind = Request::BatchPart{id, p.index};
    }
    enqueue(w, std::move(g));
  }
}

// [step_vec, "", rid, {actions, autoreset}, instance*]: a vector env's step. The actions (an
// ndarray, one row per instance) are split by worker; each worker steps its rows and answers
// stacked results, passed back untouched with the rows they belong to.
void Dispatcher::on_step_vec(Request& head, Frames& f) {
  if (f.size() < 6)
    return fail(head, make_error(ErrorCode::BadRequest, "step_vec needs a body and one or more instances"));
  if (shutting_down_) return fail(head, make_error(ErrorCode::ShuttingDown, "the farm is shutting down"));
  const std::size_t n = f.size() - 5;
  Value body;
  std::string err;
  if (!protocol::decode(view(f[4]), body, err)) return fail(head, make_error(ErrorCode::BadRequest, err));
  const Value* actions = body.find("actions");
  if (!actions || !actions->is_tensor() || actions->as_tensor().shape.empty() || actions->as_tensor().shape[0] != n) {
    return fail(head,
                make_error(ErrorCode::BadRequest, "step_vec needs 'actions': an ndarray with one row per instance"));
  }
  const protocol::Tensor& t = actions->as_tensor();
  const std::size_t row_bytes = t.data.size() / n;
  const Value* autoreset = body.find("autoreset");
  struct Group {
    std::vector<std::size_t> rows;
    protocol::Array instances;
  };
  std::vector<std::pair<std::size_t, Group>> groups;      // by worker, in order of first appearance
  std::unordered_map<std::size_t, std::size_t> group_of;  // worker -> its index in groups
  std::vector<std::pair<std::size_t, Error>> unknown;
  for (std::size_t i = 0; i < n; ++i) {
    const std::string instance = transport::str(f[5 + i]);
    auto w = admission_.may_use(instance, head.client) ? routes_.find(instance) : std::nullopt;
    if (!w) {
      unknown.emplace_back(i, missing_instance(instance));
      continue;
    }
    auto [at, fresh] = group_of.try_emplace(*w, groups.size());
    if (fresh) groups.push_back({*w, Group{}});
    Group& g = groups[at->second].second;
    g.rows.push_back(i);
    g.instances.push_back(Value(instance));
  }
  const uint64_t id = next_batch_++;
  VecBatch& b = vec_batches_[id];
  b.client = head.client;
  b.client_rid = head.client_rid;
  b.received = head.received;
  b.remaining = groups.size() + unknown.size();
  for (auto& [w, g] : groups) {
    Request part;
    part.client = head.client;
    part.client_rid = head.client_rid;
    part.verb = std::string(verb::kStepVec);
    Request::VecShare share{id, {}, {}};
    protocol::Tensor slice{t.dtype, t.shape, {}};
    slice.shape[0] = g.rows.size();
    slice.data.reserve(row_bytes * g.rows.size());
    for (auto r : g.rows) slice.data.append(t.data, r * row_bytes, row_bytes);
    for (const auto& inst : g.instances) share.instances.push_back(inst.as_string());
    part.body = protocol::encode_vec_share(share.instances, std::move(slice), autoreset);
    share.rows = std::move(g.rows);
    part.kind = std::move(share);
    if (!admit(part)) continue;
    enqueue(w, std::move(part));
  }
  for (auto& [row, e] : unknown) {
    Request part;
    part.kind = Request::VecShare{id, {}, {row}};
    fail(part, e);
  }
}

bool Dispatcher::on_reply(std::size_t w, Frames& f) {
  auto& s = registry_.slot(w);
  if (f.size() < 5) return false;
  registry_.heartbeat(w);  // any reply shows the process alive (the worker skips heartbeats while it replies)
  auto rid = protocol::decode_rid(view(f[2]));
  if (!rid) return false;
  auto done = registry_.finish(w, *rid);
  if (!done) return false;  // already answered (timeout) or stale
  const bool ok = view(f[3]) == protocol::kStatusOk;
  const Request& r = done->request;
  if (const auto* share = r.as<Request::VecShare>()) {  // step_vec: [identity, rep, rid, status, body]
    if (f.size() != 5) {
      fail(r, make_error(ErrorCode::Internal, "the worker answered step_vec with a malformed reply"));
    } else {
      if (ok) {
        s.steps += share->rows.size();
        count_steps(share->rows.size());
      }
      respond(r, view(f[3]), std::move(f[4]));
    }
    pump(w);
    return false;
  }
  if (const auto* many = r.as<Request::StepMany>()) {  // step_many: [identity, rep, rid, ok, (status, body)*]
    if (ok && f.size() == 4 + 2 * many->parts.size()) {
      settle(r);
      for (std::size_t i = 0; i < many->parts.size(); ++i) {
        const bool part_ok = view(f[4 + 2 * i]) == protocol::kStatusOk;
        if (part_ok) {
          s.steps++;
          count_steps(1);
        }
        batch_result(many->batch, many->parts[i].index, view(f[4 + 2 * i]), std::move(f[5 + 2 * i]));
      }
    } else {
      fail(r, make_error(ErrorCode::Internal, "the worker answered step_many with a malformed reply"));
    }
    pump(w);
    return false;
  }
  if (f.size() != 5) return false;
  if (r.verb == verb::kStep && ok) {
    s.steps++;
    count_steps(1);
  }
  respond(r, view(f[3]), std::move(f[4]));
  if ((r.verb == verb::kMake && !ok) || r.verb == verb::kClose) {
    routes_.remove(r.instance);
    admission_.forget(r.instance);
    std::deque<Request> keep;
    for (auto& q : s.queue) {
      if (q.instance != r.instance) {
        keep.push_back(std::move(q));
        continue;
      }
      Value d(protocol::Map{{"instance_id", r.instance}});
      fail(q, make_error(ErrorCode::UnknownInstance, "instance '" + r.instance + "' was closed", d));
    }
    s.queue = std::move(keep);
    registry_.release(w, r.instance);
    pump(w);
    return true;
  }
  pump(w);
  pump(w);
  return false;
}

}  // namespace gymfarm::broker
