// Helpers shared by the end-to-end tests: runfiles, temporary folders, and
// the launcher's options for a short job on synthetic data.
// Test-only: each test binary includes it once.
#ifndef TESSERA_TESTS_E2E_E2E_FIXTURES_H_
#define TESSERA_TESTS_E2E_E2E_FIXTURES_H_

#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "launcher/launcher.h"

namespace tessera {

inline std::string Runfile(const std::string& path) {
  return std::string(std::getenv("TEST_SRCDIR")) + "/tessera/" + path;
}

inline std::string TempDir(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

inline std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline double Field(const std::string& json, const std::string& key) {
  size_t at = json.find("\"" + key + "\":");
  REQUIRE(at != std::string::npos);
  return std::strtod(json.c_str() + at + key.size() + 3, nullptr);
}

inline bool NoChildLeft() { return waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD; }

inline LaunchOptions Options(const std::string& out, std::vector<std::string> sets) {
  LaunchOptions o;
  o.config_path = Runfile("configs/fashion_mnist_mlp.yaml");
  o.overrides = {"data.dataset=synthetic",   "data.synthetic_train=4096",
                 "data.synthetic_test=1024", "model.layers=[784,32,10]",
                 "training.epochs=2",        "training.batch_size=32"};
  o.overrides.insert(o.overrides.end(), sets.begin(), sets.end());
  o.out_dir = TempDir(out);
  o.server_binary = Runfile("server/tessera-server");
  o.worker_binary = Runfile("worker/tessera-worker");
  o.live = false;
  return o;
}

}  // namespace tessera

#endif  // TESSERA_TESTS_E2E_E2E_FIXTURES_H_
