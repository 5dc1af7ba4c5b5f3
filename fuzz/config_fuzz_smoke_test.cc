// The config fuzz target's smoke run (fuzz/smoke.h): the repository's job
// files and hand-written hostile YAML, then 20,000 mutations of them.
#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

#include "fuzz/config_fuzz.h"
#include "fuzz/smoke.h"

namespace tessera {
namespace {

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST_CASE("the config fuzz target survives seeds and their mutations") {
  std::vector<std::string> seeds;
  for (const char* path : {"configs/fashion_mnist_mlp.yaml", "configs/fashion_mnist_cnn.yaml",
                           "configs/fashion_mnist_softmax.yaml", "configs/bench.yaml"}) {
    seeds.push_back(Read(path));
    REQUIRE_FALSE(seeds.back().empty());
  }
  // The repository's job files all parse.
  uint64_t before = ConfigFuzzParsed();
  for (const std::string& seed : seeds) Feed(seed);
  CHECK(ConfigFuzzParsed() - before == seeds.size());
  // Hostile text is refused (INVALID_ARGUMENT; anything else aborts the target).
  const std::vector<std::string> hostile = {
      "--set cluster.servers=[\"h:99999\"]\n" + seeds[0],
      "cluster: {servers: [a:1], workers: 2}\ncluster: {workers: 3}\n",
      "cluster: &a {servers: [a:1]}\nmodel: *a\n",
      std::string(10000, '['),
  };
  before = ConfigFuzzParsed();
  for (const std::string& text : hostile) Feed(text);
  CHECK(ConfigFuzzParsed() == before);
  seeds.insert(seeds.end(), hostile.begin(), hostile.end());
  seeds.push_back("--set model.layers=[784, 99999999, 10]\n" + seeds[0]);
  seeds.push_back("security: {tls: {cert_file: a, key_file: b, ca_file: c, mutual: true}}\n");
  // Every input a fuzzer found a defect with stays a seed.
  for (const char* path : {"fuzz/regressions/config/override-into-scalar"}) {
    seeds.push_back(Read(path));
    REQUIRE_FALSE(seeds.back().empty());
  }
  // The mutations reach both outcomes: some still parse, most are refused.
  const size_t mutations = 20000;
  before = ConfigFuzzParsed();
  RunSmoke(seeds, mutations);
  const uint64_t parsed = ConfigFuzzParsed() - before;
  CHECK(parsed > seeds.size());
  CHECK(parsed < seeds.size() + mutations / 2);
}

}  // namespace
}  // namespace tessera
