// A fuzz target's smoke run inside the ordinary test build (no clang, no
// libFuzzer): every seed, then `mutations` inputs made from the seeds by
// deterministic byte flips, inserts, erases and splices, through
// LLVMFuzzerTestOneInput. Catches a target that crashes on the obvious in
// every CI run; the real fuzzing is the *_fuzz_run tests under --config=fuzz
// and scripts/fuzz.sh. With $TESSERA_FUZZ_SEEDS_OUT set, the seeds are also
// written there (one file each) as a corpus for libFuzzer.
#ifndef TESSERA_FUZZ_SMOKE_H_
#define TESSERA_FUZZ_SMOKE_H_

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) __attribute__((weak));

namespace tessera {

inline void Feed(const std::string& input) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
}

// The smoke test checks what the target made of them (each target counts
// its outcomes: fuzz/*_fuzz.h).
inline void RunSmoke(const std::vector<std::string>& seeds, size_t mutations) {
  if (const char* out = std::getenv("TESSERA_FUZZ_SEEDS_OUT")) {
    for (size_t i = 0; i < seeds.size(); ++i) {
      std::ofstream(std::string(out) + "/seed-" + std::to_string(i), std::ios::binary)
          << seeds[i];
    }
  }
  if (LLVMFuzzerInitialize != nullptr) LLVMFuzzerInitialize(nullptr, nullptr);
  for (const std::string& seed : seeds) Feed(seed);
  std::mt19937_64 rng(20261128);
  for (size_t m = 0; m < mutations; ++m) {
    std::string input = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = input.empty() ? 0 : rng() % input.size();
      switch (rng() % 5) {
        case 0:
          if (!input.empty()) input[at] = static_cast<char>(input[at] ^ (1 << (rng() % 8)));
          break;
        case 1:
          if (!input.empty()) input[at] = static_cast<char>(rng());
          break;
        case 2:
          input.insert(at, 1 + rng() % 8, static_cast<char>(rng()));
          break;
        case 3:
          if (!input.empty()) input.erase(at, 1 + rng() % 8);
          break;
        default: {
          const std::string& other = seeds[rng() % seeds.size()];
          if (!other.empty()) input.insert(at, other.substr(rng() % other.size()));
        }
      }
    }
    Feed(input);
  }
}

}  // namespace tessera

#endif  // TESSERA_FUZZ_SMOKE_H_
