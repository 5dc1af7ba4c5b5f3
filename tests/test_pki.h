// A throwaway PKI for the TLS tests (scripts/make_test_certs.sh: ca.pem,
// server.pem/.key for localhost and 127.0.0.1, client.pem/.key, and the
// other-ca.pem family nobody trusts), made once per test process.
// Test-only; the test needs data = ["//scripts:make_test_certs.sh"].
#ifndef TESSERA_TESTS_TEST_PKI_H_
#define TESSERA_TESTS_TEST_PKI_H_

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace tessera {

// The folder holding the PKI: a fresh `name` folder under the test's
// temporary directory for every process.
inline std::string TestPki(const std::string& name = "pki") {
  namespace fs = std::filesystem;
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir =
      std::string(tmp ? tmp : "/tmp") + "/" + name + "-" + std::to_string(getpid());
  if (!fs::exists(dir + "/ca.pem")) {
    const std::string script = fs::exists("scripts/make_test_certs.sh")
                                   ? "scripts/make_test_certs.sh"
                                   : "../scripts/make_test_certs.sh";
    REQUIRE(std::system(("bash " + script + " " + dir).c_str()) == 0);
  }
  return dir;
}

}  // namespace tessera

#endif  // TESSERA_TESTS_TEST_PKI_H_
