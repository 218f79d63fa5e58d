// Peer authentication: HMAC-SHA256 challenge-response over the cluster secret, so the secret
// itself never crosses the network (docs/replication.md). Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace edgestate::replication {

inline constexpr size_t kNonceBytes = 16;

// kNonceBytes bytes from the OS CSPRNG.
std::string RandomNonce();

// HMAC-SHA256(secret, role | 0 | client_nonce | server_nonce | signer | 0 | other), where
// role is "edgestate/1 server" or "edgestate/1 client" and signer is the region proving
// its knowledge of the secret.
std::string Proof(std::string_view secret, std::string_view role, std::string_view client_nonce,
                  std::string_view server_nonce, std::string_view signer, std::string_view other);

inline constexpr std::string_view kServerRole = "edgestate/1 server";
inline constexpr std::string_view kClientRole = "edgestate/1 client";

}  // namespace edgestate::replication
