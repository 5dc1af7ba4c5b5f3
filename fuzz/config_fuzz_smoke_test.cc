// The config fuzz target's smoke run (fuzz/smoke.h): the repository's job
// files and hand-written hostile YAML, then 20,000 mutations of them.
#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

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
  seeds.push_back("--set model.layers=[784, 99999999, 10]\n" + seeds[0]);
  seeds.push_back("--set cluster.servers=[\"h:99999\"]\n" + seeds[0]);
  seeds.push_back("cluster: {servers: [a:1], workers: 2}\ncluster: {workers: 3}\n");
  seeds.push_back("cluster: &a {servers: [a:1]}\nmodel: *a\n");
  seeds.push_back("security: {tls: {cert_file: a, key_file: b, ca_file: c, mutual: true}}\n");
  seeds.push_back(std::string(10000, '['));
  // Every input a fuzzer found a defect with stays a seed.
  for (const char* path : {"fuzz/regressions/config/override-into-scalar"}) {
    seeds.push_back(Read(path));
    REQUIRE_FALSE(seeds.back().empty());
  }
  CHECK(RunSmoke(seeds, 20000) == seeds.size() + 20000);
}

}  // namespace
}  // namespace tessera
