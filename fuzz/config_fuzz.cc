// Fuzz target: the job config parser. Input: YAML text; a first line that
// starts with "--set " is applied as an override (so overrides are fuzzed
// too). Any input must give a config or one INVALID_ARGUMENT line; never a
// crash, a hang or an exception.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> overrides;
  if (text.rfind("--set ", 0) == 0) {
    const size_t eol = text.find('\n');
    overrides.push_back(text.substr(6, eol == std::string::npos ? std::string::npos : eol - 6));
    text = eol == std::string::npos ? "" : text.substr(eol + 1);
  }
  absl::StatusOr<tessera::JobConfig> config = tessera::ParseJobConfig(text, overrides);
  if (config.ok()) {
    // A config that parses is usable: its tables derive without surprises.
    for (const auto& t : config->Tables()) {
      if (t.name.empty()) std::abort();
    }
  } else if (config.status().code() != absl::StatusCode::kInvalidArgument) {
    std::abort();  // every refusal of text is INVALID_ARGUMENT
  }
  return 0;
}
