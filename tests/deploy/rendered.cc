#include "tests/deploy/rendered.h"

#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>

namespace tessera {

std::string Runfile(const std::string& path) {
  return std::string(std::getenv("TEST_SRCDIR")) + "/tessera/" + path;
}

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

Rendered Render(const std::string& overlay) {
  int status;
  Rendered r;
  // Runfiles are symlinks into the source tree, which kustomize does not
  // follow; render a dereferenced copy.
  const std::string copy = TempPath("k8s-" + overlay);
  Shell("rm -rf " + copy + " && cp -rL " + Runfile("deploy/k8s") + " " + copy, &status);
  REQUIRE(status == 0);
  // The secure overlay's job token, drawn as docs/deploy.md tells operators.
  Shell("openssl rand -hex 32 > " + copy + "/overlays/secure/token", &status);
  REQUIRE(status == 0);
  r.text = Shell("kubectl kustomize " + copy + "/overlays/" + overlay + " 2>/dev/null", &status);
  INFO(r.text);
  REQUIRE(status == 0);
  for (const YAML::Node& doc : YAML::LoadAll(r.text)) {
    // Never Node::operator= onto a held node: yaml-cpp would rewrite that
    // node (and every copy of it) in place.
    const std::string kind = doc["kind"].as<std::string>();
    r.by_kind.erase(kind);
    r.by_kind.emplace(kind, doc);
    r.by_name.emplace(kind + "/" + doc["metadata"]["name"].as<std::string>(), doc);
  }
  return r;
}

std::string JobTextOf(const Rendered& r) {
  return r.by_kind.at("ConfigMap")["data"]["job.yaml"].as<std::string>();
}

JobConfig JobOf(const Rendered& r) {
  auto config = ParseJobConfig(JobTextOf(r), {});
  INFO(config.status().message());
  REQUIRE(config.ok());
  return *config;
}

}  // namespace tessera
