// What the config fuzz target made of its inputs, for its smoke test
// (fuzz/config_fuzz.cc says what the target checks).
#ifndef TESSERA_FUZZ_CONFIG_FUZZ_H_
#define TESSERA_FUZZ_CONFIG_FUZZ_H_

#include <cstdint>

namespace tessera {

// Inputs that gave a config (the rest were refused), since the process started.
uint64_t ConfigFuzzParsed();

}  // namespace tessera

#endif  // TESSERA_FUZZ_CONFIG_FUZZ_H_
