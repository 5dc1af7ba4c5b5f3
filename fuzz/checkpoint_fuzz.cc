// Fuzz target: a checkpoint as whoever can write the shared volume would
// make it, through everything a restoring shard does after the checksums
// pass (the store's tiling check, Shard::CheckManifest, Shard::Restore).
// Input: 4 bytes (little-endian) of manifest length L, L bytes of a
// CheckpointManifest, then the data file. The checksums are not fuzzed:
// an attacker recomputes them, so the target starts where they pass. A
// shard must refuse with a status or restore values that are all finite;
// never crash, read out of bounds, or allocate beyond the layout.
//
// Each input restores into a fresh shard of a small job (dense, sparse and
// Adam slots; dynamic balancing, so plans load too).
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fuzz/checkpoint_fuzz.h"
#include "google/protobuf/stubs/logging.h"
#include "server/checkpoint.h"
#include "server/shard.h"

namespace tessera {

namespace {

constexpr char kJob[] = R"(
name: fuzz-ckpt
cluster: {servers: ['127.0.0.1:1'], workers: 2}
model:
  type: tables
  tables:
    - {name: w, kind: dense, size: 300, init: {type: normal, stddev: 0.1}}
    - {name: b, kind: dense, size: 3}
    - {name: emb, kind: sparse, dim: 4, init: {type: uniform, low: -1, high: 1}}
optimizer: {type: adam, lr: 0.01}
training: {epochs: 4, balance: dynamic}
server: {max_sparse_rows: 20000}
)";

std::atomic<uint64_t> restored{0};

}  // namespace

const JobConfig& CheckpointFuzzJob() {
  static const JobConfig* config = [] {
    auto c = ParseJobConfig(kJob, {});
    if (!c.ok()) std::abort();
    return new JobConfig(*c);
  }();
  return *config;
}

std::string CheckpointFuzzInput(const ShardState& state) {
  v1::CheckpointManifest m = state.manifest;
  std::string data;
  for (size_t i = 0; i < state.tables.size(); ++i) {
    v1::CheckpointTable* t = m.mutable_tables(static_cast<int>(i));
    t->set_offset(data.size());
    t->set_bytes(state.tables[i].size());
    data.append(state.tables[i].data(), state.tables[i].size());
  }
  m.set_data_bytes(data.size());
  const std::string manifest = m.SerializeAsString();
  std::string out(4, '\0');
  const uint32_t n = static_cast<uint32_t>(manifest.size());
  std::memcpy(out.data(), &n, 4);
  return out + manifest + data;
}

uint64_t CheckpointFuzzRestored() { return restored.load(); }

}  // namespace tessera

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  static google::protobuf::LogSilencer silence;  // for the whole run
  tessera::CheckpointFuzzJob();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tessera;
  if (size < 4) return 0;
  uint32_t length;
  std::memcpy(&length, data, 4);
  if (length > size - 4) return 0;
  v1::CheckpointManifest m;
  if (!m.ParseFromArray(data + 4, static_cast<int>(length))) return 0;
  // The data file, copied to memory aligned as a mapping is.
  const size_t bytes = size - 4 - length;
  if (m.data_bytes() != bytes) return 0;  // the store compares it with the file's size
  if (!CheckpointStore::CheckTiling(m).ok()) return 0;
  auto shard = Shard::Create(CheckpointFuzzJob(), 0);
  if (!shard.ok()) std::abort();
  if (!(*shard)->CheckManifest(m).ok()) return 0;
  std::shared_ptr<char[]> file(new char[bytes + 8]);
  std::memcpy(file.get(), data + 4 + length, bytes);
  ShardState state;
  for (const v1::CheckpointTable& t : m.tables()) {
    state.tables.emplace_back(file, file.get() + t.offset(), t.bytes());
  }
  state.manifest = std::move(m);
  if (!(*shard)->Restore(state).ok()) return 0;
  // What was restored is served: every value must be finite.
  std::unique_ptr<ShardState> back = (*shard)->Snapshot();
  for (size_t i = 0; i < back->tables.size(); ++i) {
    const v1::CheckpointTable& t = back->manifest.tables(static_cast<int>(i));
    const uint64_t skip = t.sparse() ? t.rows() * sizeof(uint64_t) : 0;
    for (uint64_t at = skip; at + 4 <= back->tables[i].size(); at += 4) {
      float v;
      std::memcpy(&v, back->tables[i].data() + at, 4);
      if (!std::isfinite(v)) std::abort();
    }
  }
  restored.fetch_add(1);
  return 0;
}
