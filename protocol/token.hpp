#pragma once
// Access tokens (docs/operations.md "Security"): random, compared in constant time.
#include <string>
#include <string_view>

namespace gymfarm::protocol {

// 128 random bits from the OS, as 32 lowercase hex digits.
std::string new_token();
// Compares without an early exit, so the time taken does not tell how much of a guess was right.
bool token_equal(std::string_view expected, std::string_view given);

}  // namespace gymfarm::protocol
