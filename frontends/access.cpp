#include "frontends/access.hpp"

#include <algorithm>
#include <cctype>

#include "protocol/token.hpp"

namespace gymfarm::frontends {

namespace {

constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// "127.0.0.1:5000" -> "127.0.0.1"; "[::1]:5000" -> "[::1]"
std::string_view strip_port(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    const auto end = host.find(']');
    return end == std::string_view::npos ? host : host.substr(0, end + 1);
  }
  const auto colon = host.rfind(':');
  return colon == std::string_view::npos ? host : host.substr(0, colon);
}

bool is_local_name(std::string_view host) {
  std::string h(strip_port(host));
  std::transform(h.begin(), h.end(), h.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return h == "localhost" || h.rfind("127.", 0) == 0 || h == "[::1]";
}

std::string query_token(std::string_view target) {
  const auto q = target.find('?');
  if (q == std::string_view::npos) return "";
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto part = query.substr(0, amp);
    if (part.rfind("token=", 0) == 0) return std::string(part.substr(6));
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return "";
}

std::string given_token(std::string_view authorization, std::string_view target) {
  if (authorization.rfind("Bearer ", 0) == 0) return std::string(authorization.substr(7));
  if (authorization.rfind("Basic ", 0) == 0) {
    // http://:TOKEN@host:port in a URL becomes Basic base64(":TOKEN"): the password is the token
    if (auto decoded = base64_decode(authorization.substr(6))) {
      const auto colon = decoded->find(':');
      return colon == std::string::npos ? *decoded : decoded->substr(colon + 1);
    }
  }
  return query_token(target);
}

}  // namespace

std::optional<Refusal> check_access(const AccessPolicy& policy, std::string_view host, std::string_view origin,
                                    std::string_view authorization, std::string_view target) {
  if (policy.token.empty() && !policy.any_host && !is_local_name(host)) {
    // a loopback farm answers only to loopback names: a rebound DNS name cannot reach it
    return Refusal{403, "Host '" + std::string(host) + "' is not allowed; this farm answers to localhost only"};
  }
  if (!origin.empty()) {
    const bool listed = std::find(policy.allowed_origins.begin(), policy.allowed_origins.end(), origin) !=
                        policy.allowed_origins.end();
    const auto scheme = origin.find("://");
    const bool local = scheme != std::string_view::npos && is_local_name(origin.substr(scheme + 3));
    if (!listed && !local) {
      return Refusal{403, "Origin '" + std::string(origin) + "' is not allowed (gymfarm start --allow-origin)"};
    }
  }
  if (!policy.token.empty() && !protocol::token_equal(policy.token, given_token(authorization, target))) {
    return Refusal{401, "this farm needs its token (Authorization: Bearer TOKEN, http://:TOKEN@host, or ?token=TOKEN)"};
  }
  return std::nullopt;
}

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned n = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8) |
                       static_cast<unsigned char>(in[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out += kAlphabet[(n >> k) & 63];
  }
  if (i < in.size()) {
    unsigned n = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) n |= static_cast<unsigned char>(in[i + 1]) << 8;
    out += kAlphabet[n >> 18];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view in) {
  std::string out;
  unsigned buffer = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    const auto pos = kAlphabet.find(c);
    if (pos == std::string_view::npos) return std::nullopt;
    buffer = (buffer << 6) | static_cast<unsigned>(pos);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buffer >> bits) & 0xff);
    }
  }
  return out;
}

}  // namespace gymfarm::frontends
