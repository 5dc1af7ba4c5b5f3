#include "common/identity.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

std::optional<uint32_t> OrdinalOf(const std::string& name) {
  // A FQDN hostname ("tessera-server-2.tessera-server...") keeps only the first label.
  std::string host = name.substr(0, name.find('.'));
  size_t dash = host.rfind('-');
  if (dash == std::string::npos) return std::nullopt;
  std::string tail = host.substr(dash + 1);
  uint32_t n;
  if (tail.empty() || !absl::SimpleAtoi(tail, &n)) return std::nullopt;
  return n;
}

absl::StatusOr<uint32_t> ResolveShardIndex(const std::optional<int64_t>& flag_value) {
  if (flag_value) return static_cast<uint32_t>(*flag_value);
  for (const char* var : {"POD_NAME", "HOSTNAME"}) {
    std::string name = Env(var);
    if (name.empty()) continue;
    if (auto n = OrdinalOf(name.substr(0, name.find('.')))) return *n;
  }
  return absl::InvalidArgumentError(
      "no shard index: pass --shard N, or run where $POD_NAME or $HOSTNAME ends in -N "
      "(a StatefulSet pod)");
}

absl::StatusOr<uint32_t> ResolveWorkerRank(const std::optional<int64_t>& flag_value) {
  if (flag_value) return static_cast<uint32_t>(*flag_value);
  std::string index = Env("JOB_COMPLETION_INDEX");
  uint32_t n;
  if (!index.empty()) {
    if (absl::SimpleAtoi(index, &n)) return n;
    return absl::InvalidArgumentError(
        absl::StrCat("JOB_COMPLETION_INDEX = '", index, "': expected a non-negative integer"));
  }
  return absl::InvalidArgumentError(
      "no worker rank: pass --rank N, or set JOB_COMPLETION_INDEX (a Kubernetes Indexed Job)");
}

}  // namespace tessera
