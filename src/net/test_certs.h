// Test support: self-signed certificates made in-process. Include from *_test.cc files only.
#pragma once

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <filesystem>
#include <memory>
#include <string>

namespace edgestate {

// Writes a fresh P-256 key and a self-signed certificate for `common_name` (valid for an hour)
// to dir/NAME.key and dir/NAME.pem.
inline void MakeSelfSignedCertificate(const std::filesystem::path& dir, const std::string& name,
                                      const std::string& common_name) {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  ASSERT_NE(key, nullptr);
  std::unique_ptr<X509, decltype(&X509_free)> cert(X509_new(), X509_free);
  X509_set_version(cert.get(), 2);
  ASSERT_EQ(ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* subject = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509_set_issuer_name(cert.get(), subject);
  ASSERT_GT(X509_sign(cert.get(), key.get(), EVP_sha256()), 0);
  std::unique_ptr<BIO, decltype(&BIO_free)> k(BIO_new_file((dir / (name + ".key")).c_str(), "w"),
                                              BIO_free);
  std::unique_ptr<BIO, decltype(&BIO_free)> c(BIO_new_file((dir / (name + ".pem")).c_str(), "w"),
                                              BIO_free);
  ASSERT_TRUE(k && c);
  ASSERT_EQ(PEM_write_bio_PrivateKey(k.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr), 1);
  ASSERT_EQ(PEM_write_bio_X509(c.get(), cert.get()), 1);
}

}  // namespace edgestate
