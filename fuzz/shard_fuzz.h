// What the shard fuzz target's calls answered, for its smoke test
// (fuzz/shard_fuzz.cc says what the target checks).
#ifndef TESSERA_FUZZ_SHARD_FUZZ_H_
#define TESSERA_FUZZ_SHARD_FUZZ_H_

#include <cstdint>

namespace tessera {

struct ShardFuzzTally {
  uint64_t accepted = 0;  // calls answered OK
  uint64_t refused = 0;   // calls answered with an error status
};

// Since the process started (inputs that do not parse call nothing).
ShardFuzzTally ShardFuzzCounts();

}  // namespace tessera

#endif  // TESSERA_FUZZ_SHARD_FUZZ_H_
