// Helpers shared by the end-to-end tests: runfiles, temporary folders, and
// the launcher's options for a short job on synthetic data.
// Test-only: each test binary includes it once.
#ifndef TESSERA_TESTS_E2E_E2E_FIXTURES_H_
#define TESSERA_TESTS_E2E_E2E_FIXTURES_H_

#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "launcher/launcher.h"
#include "server/checkpoint.h"
#include "tests/shell.h"
#include "nlohmann/json.hpp"

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

// The JSON object in `text` (a summary or result file).
inline nlohmann::json Json(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  REQUIRE(j.is_object());
  return j;
}

// The objects of a JSON-lines file's text, one a line.
inline std::vector<nlohmann::json> JsonLines(const std::string& text) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(Json(line));
  }
  return lines;
}

// The number `key` of the JSON object in `text`.
inline double Field(const std::string& text, const std::string& key) {
  const nlohmann::json j = Json(text);
  INFO("key " << key << " in " << text);
  REQUIRE(j.contains(key));
  REQUIRE(j[key].is_number());
  return j[key].get<double>();
}

// Every table's checksum and optimizer steps in the newest checkpoint of each
// shard (`shards` of them) under `root` (root/shard-N).
// The same for shard `s` alone.
inline std::vector<std::string> NewestCheckpoint(const std::string& root, int s) {
  std::vector<std::string> out;
  auto all = CheckpointStore::List(root + "/shard-" + std::to_string(s));
  REQUIRE(!all.empty());
  auto m = CheckpointStore::ReadManifest(all.back());
  REQUIRE(m.ok());
  for (const auto& t : m->tables()) {
    std::string line = t.name() + " crc " + std::to_string(t.crc32());
    for (int64_t step : t.chunk_steps()) line += " " + std::to_string(step);
    out.push_back(line);
  }
  return out;
}

inline std::vector<std::string> NewestCheckpoints(const std::string& root, int shards = 2) {
  std::vector<std::string> out;
  for (int s = 0; s < shards; ++s) {
    for (std::string& line : NewestCheckpoint(root, s)) out.push_back(std::move(line));
  }
  return out;
}

// Blocks until shard `shard`'s checkpoints under `root` (root/shard-N) reach
// `clock` (a moment of a run that does not depend on the machine's speed).
inline void WaitForCheckpoint(const std::string& root, int shard, int64_t clock) {
  const std::string dir = root + "/shard-" + std::to_string(shard);
  for (int i = 0; i < 2400; ++i) {
    for (const std::string& path : CheckpointStore::List(dir)) {
      auto m = CheckpointStore::ReadManifest(path);
      if (m.ok() && m->clock() >= clock) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  FAIL("no checkpoint of clock " << clock << " in " << dir << " within 60 s");
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
