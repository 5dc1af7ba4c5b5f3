// The checkpoint fuzz target's job and input format, for its smoke test
// and seed corpus (fuzz/checkpoint_fuzz.cc says what the target checks).
#ifndef TESSERA_FUZZ_CHECKPOINT_FUZZ_H_
#define TESSERA_FUZZ_CHECKPOINT_FUZZ_H_

#include <cstdint>
#include <string>

#include "common/config.h"
#include "server/checkpoint.h"

namespace tessera {

// The small job every input restores into.
const JobConfig& CheckpointFuzzJob();
// `state` (a shard's Snapshot) as one input of the target.
std::string CheckpointFuzzInput(const ShardState& state);
// Inputs that restored (the rest were refused), since the process started.
uint64_t CheckpointFuzzRestored();

}  // namespace tessera

#endif  // TESSERA_FUZZ_CHECKPOINT_FUZZ_H_
