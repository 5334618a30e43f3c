#pragma once
// Fuzz entry points shared by the libFuzzer targets (scripts/fuzz) and the regression unit test,
// which replays every input kept under fuzz/corpus/<target>/. Each must never crash or hang.
#include <cstddef>
#include <cstdint>

namespace gymfarm::fuzz {

// The native envelope decoder: msgpack bodies with ndarrays, and the space parser on top.
void codec(const uint8_t* data, std::size_t size);
// The Gymie JSON path before the farm is asked: depth check, parse, repr, JSON -> Value -> JSON.
void gymie_json(const uint8_t* data, std::size_t size);
// The gateway's access check over arbitrary Host / Origin / Authorization / target strings.
void access(const uint8_t* data, std::size_t size);
// The REST router and body parser of both dialects, over a scripted farm: a flags byte (dialect,
// which error the farm answers with), then method, target, body and content type split at NUL
// bytes; "@" in the target stands for an instance made first.
void rest(const uint8_t* data, std::size_t size);
// The stream-socket framing (transport/stream.hpp) that the broker reads from local clients and
// workers: the first byte picks how the rest is cut into writes; every message read must be whole
// and within the size limit.
void stream(const uint8_t* data, std::size_t size);

}  // namespace gymfarm::fuzz
