#include "frontends/instance_owners.hpp"

namespace gymfarm::frontends {

using protocol::Value;

namespace {

std::string text(const Value* v) { return v && v->is_string() ? v->as_string() : std::string(); }

// A native session as the dashboard names it: "session #3 trainer (local)", ", shared" when any
// client may use the instance.
std::string session_owner(const Value& o) {
  const Value* n = o.find("session");
  if (!n || !n->is_number()) return "unknown";
  std::string out = "session #" + std::to_string(static_cast<long long>(n->as_double()));
  if (const std::string name = text(o.find("client")); !name.empty()) out += " " + name;
  out += " (" + text(o.find("via")) + ")";
  if (const Value* shared = o.find("shared"); shared && shared->is_bool() && shared->as_bool()) out += ", shared";
  return out;
}

}  // namespace

std::vector<InstanceRow> instance_rows(const Value& stats, const std::map<std::string, GatewayInstance>& gateway) {
  std::vector<InstanceRow> rows;
  const Value* workers = stats.find("workers");
  if (!workers || !workers->is_array()) return rows;
  for (const Value& w : workers->as_array()) {
    const Value* hosted = w.find("instances");
    if (!hosted || !hosted->is_array()) continue;
    const Value* owners = w.find("owners");
    const bool have_owners = owners && owners->is_array() && owners->as_array().size() == hosted->as_array().size();
    const Value* index = w.find("worker");
    for (std::size_t i = 0; i < hosted->as_array().size(); ++i) {
      const Value& h = hosted->as_array()[i];
      if (!h.is_string() || h.as_string().empty()) continue;
      InstanceRow r;
      r.instance = h.as_string();
      r.env_id = text(w.find("env_id"));
      r.worker = index && index->is_number() ? index->as_double() : -1;
      const Value none;
      const Value& o = have_owners ? owners->as_array()[i] : none;
      const std::string via = text(o.find("via"));
      const Value* shared = o.find("shared");
      const bool is_shared = shared && shared->is_bool() && shared->as_bool();
      if (auto g = gateway.find(r.instance); via == "gateway" && g != gateway.end()) {
        r.dialect = g->second.dialect;
        r.owner = g->second.owner;
        r.viewable = true;
      } else if (via == "gateway") {  // the gateway's, in no table (yet, or any more)
        r.dialect = "gateway";
        r.owner = "the gateway";
        r.viewable = true;
      } else {
        r.dialect = "native";
        r.owner = session_owner(o);
        r.viewable = is_shared;
      }
      rows.push_back(std::move(r));
    }
  }
  return rows;
}

std::map<std::string, std::size_t> instances_by_dialect(const std::vector<InstanceRow>& rows) {
  std::map<std::string, std::size_t> out;
  for (const char* d : kInstanceDialects) out[d] = 0;
  for (const auto& r : rows) {
    if (auto it = out.find(r.dialect); it != out.end()) ++it->second;
  }
  return out;
}

}  // namespace gymfarm::frontends
