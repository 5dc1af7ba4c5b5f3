// Command-line parsing for the daemons and tools: `--name value` or
// `--name=value`, some flags repeatable (`--set a=1 --set b=2`).
// Anything else is an error naming the argument, so a typo never passes.
//
//   auto flags = ParseFlags(argc, argv, {"config", "shard", "log-level"}, {"set"});
//   std::string path = flags->Get("config");
#ifndef TESSERA_COMMON_FLAGS_H_
#define TESSERA_COMMON_FLAGS_H_

#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

class Flags {
 public:
  // The last value of `name`, or "" when absent.
  std::string Get(const std::string& name) const;
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  // Every value of a repeatable flag, in order.
  std::vector<std::string> All(const std::string& name) const;
  // Arguments that were not flags (e.g. `tessera run CONFIG`).
  const std::vector<std::string>& positional() const { return positional_; }
  // Parses `name` as an integer in [0, max]; nullopt when absent.
  // INVALID_ARGUMENT naming the flag, the value and the range otherwise (a
  // value is never wrapped into range).
  absl::StatusOr<std::optional<int64_t>> GetInt(
      const std::string& name, int64_t max = std::numeric_limits<int64_t>::max()) const;

 private:
  friend absl::StatusOr<Flags> ParseFlags(int, char**, const std::vector<std::string>&,
                                          const std::vector<std::string>&,
                                          const std::vector<std::string>&);
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

// `single` flags may appear once; `repeatable` ones any number of times;
// `switches` take no value (`--standalone`; Has() tells whether given).
absl::StatusOr<Flags> ParseFlags(int argc, char** argv, const std::vector<std::string>& single,
                                 const std::vector<std::string>& repeatable,
                                 const std::vector<std::string>& switches = {});

}  // namespace tessera

#endif  // TESSERA_COMMON_FLAGS_H_
