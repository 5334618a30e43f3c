#include "frontends/access.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>

#include "protocol/token.hpp"

namespace gymfarm::frontends {

namespace {

constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Host and Origin values, parsed (docs/operations.md "Host and Origin"): no prefix matching.

// "5000" -> true; empty, non-digits, 0 or above 65535 -> false
bool valid_port(std::string_view port) {
  if (port.empty() || port.size() > 5) return false;
  unsigned value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value >= 1 && value <= 65535;
}

// Four decimal octets, each 0-255 without leading zeros ("0177.0.0.1" is octal to some resolvers).
std::optional<std::array<unsigned, 4>> parse_ipv4(std::string_view s) {
  std::array<unsigned, 4> out{};
  std::size_t k = 0;
  while (true) {
    std::size_t n = 0;
    unsigned value = 0;
    while (n < s.size() && s[n] >= '0' && s[n] <= '9') {
      if (n == 3) return std::nullopt;
      value = value * 10 + static_cast<unsigned>(s[n] - '0');
      ++n;
    }
    if (n == 0 || value > 255 || (n > 1 && s[0] == '0')) return std::nullopt;
    out[k++] = value;
    s.remove_prefix(n);
    if (k == 4) return s.empty() ? std::optional(out) : std::nullopt;
    if (s.empty() || s.front() != '.') return std::nullopt;
    s.remove_prefix(1);
  }
}

enum class HostKind { Other, Loopback, Unspecified };

// A host without its port: localhost, 127.0.0.0/8, [::1], [::ffff:127.x.y.z] are Loopback;
// 0.0.0.0 and [::] are Unspecified (clients connect to them as to loopback); anything else Other.
HostKind host_kind(std::string_view host) {
  if (host.empty()) return HostKind::Other;
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return HostKind::Other;
    const std::string inner(host.substr(1, host.size() - 2));
    for (char c : inner) {  // inet_pton would accept nothing else anyway; no zone ids ("%eth0")
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') return HostKind::Other;
    }
    in6_addr a{};
    if (::inet_pton(AF_INET6, inner.c_str(), &a) != 1) return HostKind::Other;
    static constexpr unsigned char kZero[16] = {};
    if (std::memcmp(a.s6_addr, kZero, 15) == 0 && a.s6_addr[15] == 1) return HostKind::Loopback;  // ::1
    if (std::memcmp(a.s6_addr, kZero, 16) == 0) return HostKind::Unspecified;                     // ::
    static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(a.s6_addr, kMapped, 12) == 0 && a.s6_addr[12] == 127)
      return HostKind::Loopback;  // ::ffff:127.x.y.z
    return HostKind::Other;
  }
  if (auto v4 = parse_ipv4(host)) {
    if ((*v4)[0] == 127) return HostKind::Loopback;
    if (*v4 == std::array<unsigned, 4>{0, 0, 0, 0}) return HostKind::Unspecified;
    return HostKind::Other;
  }
  std::string name(host);
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return name == "localhost" || name == "localhost." ? HostKind::Loopback : HostKind::Other;
}

// "HOST[:PORT]" -> the host's kind, Other when the port is malformed.
HostKind authority_kind(std::string_view authority) {
  std::string_view host = authority;
  if (!authority.empty() && authority.front() == '[') {
    const auto end = authority.find(']');
    if (end == std::string_view::npos) return HostKind::Other;
    host = authority.substr(0, end + 1);
    const auto rest = authority.substr(end + 1);
    if (!rest.empty() && (rest.front() != ':' || !valid_port(rest.substr(1)))) return HostKind::Other;
  } else if (const auto colon = authority.find(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    if (!valid_port(authority.substr(colon + 1))) return HostKind::Other;
  }
  return host_kind(host);
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

bool is_local_host(std::string_view host) { return authority_kind(host) != HostKind::Other; }

bool is_local_origin(std::string_view origin) {
  const auto sep = origin.find("://");
  if (sep == std::string_view::npos) return false;
  std::string scheme(origin.substr(0, sep));
  std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (scheme != "http" && scheme != "https" && scheme != "ws" && scheme != "wss") return false;
  const auto authority = origin.substr(sep + 3);
  if (authority.find_first_of("/?#@") != std::string_view::npos) return false;  // an Origin has no path or userinfo
  // a page served from 0.0.0.0 or [::] is reachable from the network: it is not the operator's
  return authority_kind(authority) == HostKind::Loopback;
}

std::optional<Refusal> check_access(const AccessPolicy& policy, std::string_view host, std::string_view origin,
                                    std::string_view authorization, std::string_view target) {
  if (policy.token.empty() && !policy.any_host && !is_local_host(host)) {
    // a loopback farm answers only to loopback names: a rebound DNS name cannot reach it
    return Refusal{403, "Host '" + std::string(host) + "' is not allowed; this farm answers to localhost only"};
  }
  if (!origin.empty()) {
    const bool listed = std::find(policy.allowed_origins.begin(), policy.allowed_origins.end(), origin) !=
                        policy.allowed_origins.end();
    if (!listed && !is_local_origin(origin)) {
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

std::string cors_origin(const AccessPolicy& policy, std::string_view origin) {
  if (origin.empty()) return {};
  const bool listed = std::find(policy.allowed_origins.begin(), policy.allowed_origins.end(), origin) !=
                      policy.allowed_origins.end();
  return listed ? std::string(origin) : std::string();
}

bool is_allowed_preflight(const AccessPolicy& policy, std::string_view method, std::string_view host,
                          std::string_view origin, std::string_view request_method) {
  if (method != "OPTIONS" || request_method.empty() || cors_origin(policy, origin).empty()) return false;
  AccessPolicy no_token = policy;
  no_token.token.clear();
  return !check_access(no_token, host, origin, "", "");
}

}  // namespace gymfarm::frontends
