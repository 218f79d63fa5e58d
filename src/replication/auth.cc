#include "replication/auth.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <stdexcept>

namespace edgestate::replication {

std::string RandomNonce() {
  std::string n(kNonceBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(n.data()), static_cast<int>(n.size())) != 1) {
    throw std::runtime_error("RAND_bytes failed");  // The OS has no entropy: cannot continue.
  }
  return n;
}

std::string Proof(std::string_view secret, std::string_view role, std::string_view client_nonce,
                  std::string_view server_nonce, std::string_view signer, std::string_view other) {
  std::string msg;
  msg.reserve(role.size() + client_nonce.size() + server_nonce.size() + signer.size() +
              other.size() + 2);
  msg.append(role).push_back('\0');
  msg.append(client_nonce).append(server_nonce).append(signer).push_back('\0');
  msg.append(other);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

}  // namespace edgestate::replication
