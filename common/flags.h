// Command-line parsing for the daemons and tools: `--name value` or
// `--name=value`, some flags repeatable (`--set a=1 --set b=2`).
// Anything else is an error naming the argument, so a typo never passes.
// A Program declares the flags with their help; --help prints the usage it
// makes (every flag, so it cannot drift from what is parsed) and --version
// the build (common/build_info.h):
//
//   const Program kProgram{"tessera-server", "--config JOB.yaml [flags]", "One shard.",
//                          {{"config", "FILE", "the job's YAML"},
//                           {"set", "KEY=VALUE", "override a config key", FlagKind::kRepeatable}}};
//   if (auto exit = AnswerHelpOrVersion(argc, argv, kProgram)) return *exit;
//   auto flags = ParseFlags(argc, argv, kProgram);
//   std::string path = flags->Get("config");
//
// Why not Abseil's flags: they keep the last of a repeated flag (`--set` and
// `--grid` are repeatable), are global to the process (tests parse many
// command lines in one), and have no subcommands (`tessera run|sweep|status`).
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

enum class FlagKind { kSingle, kRepeatable, kSwitch };

struct FlagHelp {
  std::string name;   // without the dashes
  std::string value;  // what it takes, e.g. "FILE" ("" for a switch)
  std::string help;
  FlagKind kind = FlagKind::kSingle;
};

struct Program {
  std::string name;      // e.g. "tessera-server"
  std::string synopsis;  // after the name on the usage line
  std::string about;     // a paragraph: what it does, exit codes
  std::vector<FlagHelp> flags;
};

// The usage text: the synopsis, the paragraph, every flag with its help,
// --help and --version.
std::string Usage(const Program& program);

// With --help (or -h) anywhere: prints Usage to stdout and returns 0; with
// --version: prints VersionLine and returns 0; otherwise nullopt.
std::optional<int> AnswerHelpOrVersion(int argc, char** argv, const Program& program);

// ParseFlags with the program's flags.
absl::StatusOr<Flags> ParseFlags(int argc, char** argv, const Program& program);

// `single` flags may appear once; `repeatable` ones any number of times;
// `switches` take no value (`--standalone`; Has() tells whether given).
absl::StatusOr<Flags> ParseFlags(int argc, char** argv, const std::vector<std::string>& single,
                                 const std::vector<std::string>& repeatable,
                                 const std::vector<std::string>& switches = {});

}  // namespace tessera

#endif  // TESSERA_COMMON_FLAGS_H_
