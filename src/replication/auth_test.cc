#include "replication/auth.h"

#include <gtest/gtest.h>

namespace edgestate::replication {
namespace {

TEST(AuthTest, NoncesAreRandom) {
  std::string a = RandomNonce(), b = RandomNonce();
  EXPECT_EQ(a.size(), kNonceBytes);
  EXPECT_NE(a, b);
}

TEST(AuthTest, ProofBindsSecretRoleNoncesAndRegions) {
  std::string base = Proof("secret-1", kServerRole, "n1", "n2", "iad", "lhr");
  EXPECT_EQ(base.size(), 32u);
  EXPECT_EQ(base, Proof("secret-1", kServerRole, "n1", "n2", "iad", "lhr"));
  EXPECT_NE(base, Proof("secret-2", kServerRole, "n1", "n2", "iad", "lhr"));
  EXPECT_NE(base, Proof("secret-1", kClientRole, "n1", "n2", "iad", "lhr"));
  EXPECT_NE(base, Proof("secret-1", kServerRole, "n3", "n2", "iad", "lhr"));
  EXPECT_NE(base, Proof("secret-1", kServerRole, "n1", "n3", "iad", "lhr"));
  EXPECT_NE(base, Proof("secret-1", kServerRole, "n1", "n2", "lhr", "iad"));
}

}  // namespace
}  // namespace edgestate::replication
