#include "common/flags.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/build_info.h"

namespace tessera {

std::string Flags::Get(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() || it->second.empty() ? "" : it->second.back();
}

std::vector<std::string> Flags::All(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

absl::StatusOr<std::optional<int64_t>> Flags::GetInt(const std::string& name,
                                                     int64_t max) const {
  if (!Has(name)) return std::optional<int64_t>();
  int64_t v;
  if (!absl::SimpleAtoi(Get(name), &v) || v < 0 || v > max) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", name, " = '", Get(name), "': expected a non-negative integer",
        max < std::numeric_limits<int64_t>::max() ? absl::StrCat(" <= ", max) : std::string()));
  }
  return std::optional<int64_t>(v);
}

absl::StatusOr<Flags> ParseFlags(int argc, char** argv, const std::vector<std::string>& single,
                                 const std::vector<std::string>& repeatable,
                                 const std::vector<std::string>& switches) {
  auto is_switch = [&](const std::string& n) {
    return std::count(switches.begin(), switches.end(), n) > 0;
  };
  auto known = [&](const std::string& n) {
    return std::count(single.begin(), single.end(), n) +
           std::count(repeatable.begin(), repeatable.end(), n) + (is_switch(n) ? 1 : 0);
  };
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0 || arg.size() == 2) {
      flags.positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      if (is_switch(name)) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      }
    } else if (is_switch(name)) {
      value = "true";
    } else if (known(name) && i + 1 < argc) {
      value = argv[++i];
    } else if (known(name)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": expected a value"));
    }
    if (!known(name)) {
      std::vector<std::string> all = single;
      all.insert(all.end(), repeatable.begin(), repeatable.end());
      all.insert(all.end(), switches.begin(), switches.end());
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, "; expected one of --", absl::StrJoin(all, " --")));
    }
    bool is_single = std::count(repeatable.begin(), repeatable.end(), name) == 0;
    if (is_single && flags.values_.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " given twice"));
    }
    flags.values_[name].push_back(value);
  }
  return flags;
}

std::string Usage(const Program& program) {
  std::string out = absl::StrCat("usage: ", program.name, " ", program.synopsis, "\n");
  if (!program.about.empty()) absl::StrAppend(&out, "\n", program.about, "\n");
  absl::StrAppend(&out, "\nflags:\n");
  auto line = [&](const std::string& flag, const std::string& help) {
    if (flag.size() <= 24) {
      absl::StrAppend(&out, absl::StrFormat("  %-24s  %s\n", flag, help));
    } else {
      absl::StrAppend(&out, "  ", flag, "\n", std::string(28, ' '), help, "\n");
    }
  };
  for (const FlagHelp& f : program.flags) {
    std::string flag = absl::StrCat("--", f.name, f.value.empty() ? "" : " ", f.value);
    std::string help = f.help;
    if (f.kind == FlagKind::kRepeatable) help += " (repeatable)";
    line(flag, help);
  }
  line("--help", "print this and exit");
  line("--version", "print the version and build (CUDA or CPU-only, git revision) and exit");
  return out;
}

std::optional<int> AnswerHelpOrVersion(int argc, char** argv, const Program& program) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(Usage(program).c_str(), stdout);
      return 0;
    }
    if (arg == "--version") {
      std::printf("%s\n", VersionLine(program.name).c_str());
      return 0;
    }
  }
  return std::nullopt;
}

absl::StatusOr<Flags> ParseFlags(int argc, char** argv, const Program& program) {
  std::vector<std::string> single, repeatable, switches;
  for (const FlagHelp& f : program.flags) {
    (f.kind == FlagKind::kSingle ? single
     : f.kind == FlagKind::kRepeatable ? repeatable
                                         : switches)
        .push_back(f.name);
  }
  return ParseFlags(argc, argv, single, repeatable, switches);
}

}  // namespace tessera
