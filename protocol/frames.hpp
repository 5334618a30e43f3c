#pragma once
// Frame layout and verbs of the native protocol (docs/protocol.md).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace gymfarm::protocol {

constexpr int kProtocolVersion = 1;

namespace verb {
constexpr std::string_view kHello = "hello";
constexpr std::string_view kPing = "ping";
constexpr std::string_view kStats = "stats";
constexpr std::string_view kList = "list";
constexpr std::string_view kEnvs = "envs";
constexpr std::string_view kMake = "make";
constexpr std::string_view kReset = "reset";
constexpr std::string_view kStep = "step";
constexpr std::string_view kStepBatch = "step_batch";
constexpr std::string_view kStepVec = "step_vec";  // a vector env's step: stacked actions in, stacked results out
constexpr std::string_view kClose = "close";
constexpr std::string_view kSpaces = "spaces";
constexpr std::string_view kSample = "sample";
constexpr std::string_view kRender = "render";
constexpr std::string_view kCall = "call";
constexpr std::string_view kGetAttr = "get_attr";
constexpr std::string_view kSetAttr = "set_attr";
constexpr std::string_view kSpilled = "spilled";  // a slab reply too large for its slab (docs/protocol.md)
// gateway -> broker -> worker only: gym Monitor recordings into a directory the gateway mapped
// (the broker refuses it from any other client: it writes files)
constexpr std::string_view kMonitor = "monitor";
// broker <-> worker only
constexpr std::string_view kReply = "rep";
constexpr std::string_view kReady = "ready";
constexpr std::string_view kHeartbeat = "hb";
constexpr std::string_view kBye = "bye";
constexpr std::string_view kLink = "link";           // a worker's first message on its link: its identity
constexpr std::string_view kStepMany = "step_many";  // the steps of one step_batch for one worker's envs
constexpr std::string_view kSlab = "slab";           // [slab, instance] + its descriptors, before the make
}  // namespace verb

constexpr std::string_view kStatusOk = "ok";
constexpr std::string_view kStatusErr = "err";

// Verbs a worker serves for an existing instance.
bool is_instance_verb(std::string_view v);

std::string encode_rid(uint64_t rid);
std::optional<uint64_t> decode_rid(std::string_view bytes);

// 32 lowercase hex digits.
bool is_valid_instance_id(std::string_view id);

}  // namespace gymfarm::protocol
