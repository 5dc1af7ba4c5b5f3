// Reading a job file's YAML, shared by the parser's parts (common/config.cc,
// common/config_model.cc) and by nothing else: one MapReader per mapping,
// which remembers the keys it was asked for (any other is reported as
// unknown) and words every error the same way: "config: KEY = VALUE:
// expected WHAT".
//
// Threading: one MapReader per map, on the parsing thread.
#ifndef TESSERA_COMMON_CONFIG_READER_H_
#define TESSERA_COMMON_CONFIG_READER_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/config.h"
#include "common/status.h"
#include "yaml-cpp/yaml.h"

namespace tessera::config_internal {

// A value as an error shows it: 'scalar', a flow-style list or map, or (missing).
std::string Describe(const YAML::Node& node);
// INVALID_ARGUMENT "config: `key` = <value>: expected `expected`".
absl::Status Bad(const std::string& key, const YAML::Node& value, const std::string& expected);

// Reads the keys of one YAML map, remembering which were read so that any
// other key is reported as unknown. One MapReader per map; not thread-safe.
class MapReader {
 public:
  MapReader(const YAML::Node& node, std::string path) : node_(node), path_(std::move(path)) {}

  absl::Status CheckIsMap() const {
    if (node_ && !node_.IsNull() && !node_.IsMap()) return Bad(path_, node_, "a mapping");
    return absl::OkStatus();
  }

  // The child at `key` (undefined when absent), marked as known.
  YAML::Node Child(const std::string& key) {
    known_.insert(key);
    if (!node_ || !node_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    return node_[key];
  }

  std::string KeyPath(const std::string& key) const {
    return path_.empty() ? key : path_ + "." + key;
  }

  absl::Status Str(const std::string& key, std::string* out,
                   const std::vector<std::string>& choices = {}) {
    YAML::Node v = Child(key);
    if (!v) return absl::OkStatus();
    if (!v.IsScalar()) return Bad(KeyPath(key), v, "a string");
    std::string s = v.Scalar();
    if (!choices.empty() && std::find(choices.begin(), choices.end(), s) == choices.end()) {
      return Bad(KeyPath(key), v, "one of " + absl::StrJoin(choices, "|"));
    }
    *out = s;
    return absl::OkStatus();
  }

  // One of EnumWords<E>, parsed into *out.
  template <typename E>
  absl::Status Choice(const std::string& key, E* out) {
    YAML::Node v = Child(key);
    if (!v) return absl::OkStatus();
    const auto& words = EnumWords<E>::kWords;
    const size_t n = sizeof(words) / sizeof(words[0]);
    if (v.IsScalar()) {
      for (size_t i = 0; i < n; ++i) {
        if (v.Scalar() == words[i]) return *out = static_cast<E>(i), absl::OkStatus();
      }
    }
    return Bad(KeyPath(key), v, "one of " + absl::StrJoin(words, words + n, "|"));
  }

  absl::Status Bool(const std::string& key, bool* out) {
    YAML::Node v = Child(key);
    if (!v) return absl::OkStatus();
    if (v.IsScalar()) {
      const std::string& s = v.Scalar();
      if (s == "true" || s == "yes" || s == "on") return *out = true, absl::OkStatus();
      if (s == "false" || s == "no" || s == "off") return *out = false, absl::OkStatus();
    }
    return Bad(KeyPath(key), v, "true or false");
  }

  template <typename Int>
  absl::Status Integer(const std::string& key, Int* out, int64_t min,
                       int64_t max = std::numeric_limits<int64_t>::max()) {
    YAML::Node v = Child(key);
    if (!v) return absl::OkStatus();
    return ParseInteger(KeyPath(key), v, out, min, max);
  }

  absl::Status Real(const std::string& key, double* out, double min, double max,
                    bool min_exclusive = false) {
    YAML::Node v = Child(key);
    if (!v) return absl::OkStatus();
    double d;
    std::string range = absl::StrCat(
        min_exclusive ? "a number > " : "a number >= ", min,
        max < std::numeric_limits<double>::max() ? absl::StrCat(" and <= ", max) : std::string());
    if (!v.IsScalar() || !absl::SimpleAtod(v.Scalar(), &d) || std::isnan(d) || d < min ||
        (min_exclusive && d == min) || d > max) {
      return Bad(KeyPath(key), v, range);
    }
    *out = d;
    return absl::OkStatus();
  }

  absl::Status Float(const std::string& key, float* out, double min, double max,
                     bool min_exclusive = false) {
    double d = *out;
    TESSERA_RETURN_IF_ERROR(Real(key, &d, min, max, min_exclusive));
    *out = static_cast<float>(d);
    return absl::OkStatus();
  }

  // Fails on the first key of the map that no accessor asked for, and on a
  // key given twice (YAML forbids it; yaml-cpp would keep the first).
  absl::Status NoUnknownKeys() const {
    if (!node_ || !node_.IsMap()) return absl::OkStatus();
    std::set<std::string> seen;
    for (const auto& kv : node_) {
      std::string key = kv.first.IsScalar() ? kv.first.Scalar() : Describe(kv.first);
      if (!seen.insert(key).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("config: ", KeyPath(key), ": given twice; expected each key once"));
      }
      if (!known_.count(key)) {
        std::vector<std::string> sorted(known_.begin(), known_.end());
        return absl::InvalidArgumentError(absl::StrCat("config: ", KeyPath(key),
                                                       ": unknown key; expected one of ",
                                                       absl::StrJoin(sorted, "|")));
      }
    }
    return absl::OkStatus();
  }

  template <typename Int>
  static absl::Status ParseInteger(const std::string& path, const YAML::Node& v, Int* out,
                                   int64_t min, int64_t max) {
    int64_t i;
    std::string range = absl::StrCat(
        "an integer >= ", min,
        max < std::numeric_limits<int64_t>::max() ? absl::StrCat(" and <= ", max) : std::string());
    if (!v.IsScalar() || !absl::SimpleAtoi(v.Scalar(), &i) || i < min || i > max) {
      return Bad(path, v, range);
    }
    *out = static_cast<Int>(i);
    return absl::OkStatus();
  }

 private:
  YAML::Node node_;
  std::string path_;
  std::set<std::string> known_;
};

// Runs `read` over the map at `key` of `parent` and checks for unknown keys.
absl::Status Section(MapReader& parent, const std::string& key,
                     const std::function<absl::Status(MapReader&)>& read);

// The model section (common/config_model.cc): its type, layers, tables and
// their initializers; model-specific checks.
absl::Status ReadModel(MapReader& r, ModelConfig* m);
// The keys of one optimizer (the job's, or a table's own over a copy of it).
absl::Status ReadOptimizer(MapReader& s, OptimizerConfig* out);

}  // namespace tessera::config_internal

#endif  // TESSERA_COMMON_CONFIG_READER_H_
