// Fuzz target: the job config parser. Input: YAML text; a first line that
// starts with "--set " is applied as an override (so overrides are fuzzed
// too). Any input must give a config or one INVALID_ARGUMENT line; never a
// crash, a hang or an exception.
#include "fuzz/config_fuzz.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/config.h"

namespace tessera {
namespace {
std::atomic<uint64_t> parsed{0};
}  // namespace

uint64_t ConfigFuzzParsed() { return parsed.load(); }

}  // namespace tessera

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
    tessera::parsed.fetch_add(1);
    // A config that parses is usable: its tables derive without surprises.
    for (const auto& t : config->Tables()) {
      if (t.name.empty()) std::abort();
    }
  } else if (config.status().code() != absl::StatusCode::kInvalidArgument) {
    std::abort();  // every refusal of text is INVALID_ARGUMENT
  }
  return 0;
}
