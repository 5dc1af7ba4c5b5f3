// Test helpers for the deploy tests: runfiles, shell commands (Shell), and the
// manifests of an overlay rendered by `kubectl kustomize`.
#ifndef TESSERA_TESTS_DEPLOY_RENDERED_H_
#define TESSERA_TESTS_DEPLOY_RENDERED_H_

#include <map>
#include <string>

#include "common/config.h"
#include "tests/shell.h"
#include "yaml-cpp/yaml.h"

namespace tessera {

std::string Runfile(const std::string& path);
std::string TempPath(const std::string& name);

struct Rendered {
  std::string text;
  std::map<std::string, YAML::Node> by_kind;  // the (last) object of each kind
  std::map<std::string, YAML::Node> by_name;  // every object, as "Kind/name"
};

// Renders deploy/k8s/overlays/<overlay>; fails the test if kubectl does.
Rendered Render(const std::string& overlay);

// The job file carried by the rendered ConfigMap, parsed by Tessera itself.
JobConfig JobOf(const Rendered& r);
std::string JobTextOf(const Rendered& r);

}  // namespace tessera

#endif  // TESSERA_TESTS_DEPLOY_RENDERED_H_
