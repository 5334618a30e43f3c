#pragma once
// Who may use the gateway (docs/operations.md "Security"): the token, and Host/Origin checks
// against DNS rebinding and cross-site requests. Pure functions of the request's headers.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gymfarm::frontends {

struct AccessPolicy {
  std::string token;                         // empty: no token needed (loopback only)
  std::vector<std::string> allowed_origins;  // exact Origin values a page may come from
  bool any_host = false;  // skip the Host check (a non-loopback farm started with --insecure-no-token)
};

struct Refusal {
  int status;  // 401, 403
  std::string message;
};

// nullopt when the request may pass. `target` carries an optional ?token=.
std::optional<Refusal> check_access(const AccessPolicy& policy, std::string_view host, std::string_view origin,
                                    std::string_view authorization, std::string_view target);

// CORS for the origins an operator listed with --allow-origin (and only those): the origin to put
// in Access-Control-Allow-Origin, or empty. Loopback pages need no CORS (the same-host pages of
// the peers' own demos are served from the farm's port or opened as files).
std::string cors_origin(const AccessPolicy& policy, std::string_view origin);
// Whether an OPTIONS request is a CORS preflight the farm answers itself: a listed origin asking
// (Access-Control-Request-Method) for a request it may make, to a Host the farm answers to.
// Browsers send no credentials with a preflight, so it needs no token; the request itself does.
bool is_allowed_preflight(const AccessPolicy& policy, std::string_view method, std::string_view host,
                          std::string_view origin, std::string_view request_method);

// A Host header naming this machine: localhost (or localhost.), an IPv4 literal in 127.0.0.0/8
// (four decimal octets), 0.0.0.0, [::1], [::] or [::ffff:127.x.y.z], with an optional :PORT (1-65535).
bool is_local_host(std::string_view host);
// An Origin scheme://HOST[:PORT] (http, https, ws, wss) whose HOST is loopback (not 0.0.0.0 or [::]).
bool is_local_origin(std::string_view origin);

std::string base64_encode(std::string_view in);
std::optional<std::string> base64_decode(std::string_view in);

}  // namespace gymfarm::frontends
