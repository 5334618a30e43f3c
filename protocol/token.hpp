#pragma once
// Access tokens and ids (docs/operations.md "Security"): from the OS CSPRNG, compared in constant time.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace gymfarm::protocol {

// Fills `out` with `n` bytes from the OS CSPRNG (getrandom(2)); throws if the kernel refuses.
void random_bytes(void* out, std::size_t n);
// `n` random bytes from the OS CSPRNG as 2n lowercase hex digits: ids, farm ids, tokens.
std::string random_hex(std::size_t n);
// Bytes as lowercase hex, and back (nullopt for an odd length or a non-hex digit): text that is
// safe in a line protocol (the zygote's pipes).
std::string to_hex(std::string_view bytes);
std::optional<std::string> from_hex(std::string_view hex);
// 128 random bits from the OS, as 32 lowercase hex digits.
std::string new_token();
// Compares without an early exit, so the time taken does not tell how much of a guess was right.
bool token_equal(std::string_view expected, std::string_view given);

}  // namespace gymfarm::protocol
