// Fixtures of the replication unit tests (tests/server/replication_test.cc,
// tests/server/replication_unaggregated_test.cc): a primary Shard whose
// mutation log the test holds, a standby to follow it by hand, and the state
// of a shard as a checkpoint would hold it, to compare to the bit.
#ifndef TESSERA_TESTS_SERVER_REPLICATION_FIXTURES_H_
#define TESSERA_TESTS_SERVER_REPLICATION_FIXTURES_H_

#include <atomic>
#include <functional>
#include <set>
#include <cmath>
#include <limits>
#include <mutex>
#include <random>
#include <thread>

#include "server/checkpoint.h"
#include "zlib.h"

#include "tests/server/shard_fixtures.h"


namespace tessera {

// What a checkpoint of `shard` would hold now: the cut, every worker's clock
// and finished flag, and each table's optimizer steps (and the clocks they
// counted, and compensated updates), row count and bytes
// (as a CRC-32, readable when a check fails; Same() compares the bytes).
struct State {
  std::vector<std::string> text;
  std::vector<std::string> bytes;
};

inline State StateOf(Shard& shard) {
  std::unique_ptr<ShardState> s = shard.Snapshot();
  State out;
  out.text = {"cut " + std::to_string(s->manifest.clock())};
  for (int64_t c : s->manifest.worker_clocks()) out.text.push_back("clock " + std::to_string(c));
  for (bool f : s->manifest.worker_finished()) out.text.push_back(f ? "finished" : "training");
  for (uint64_t p : s->manifest.worker_pieces()) out.text.push_back("pieces " + std::to_string(p));
  REQUIRE(s->tables.size() == static_cast<size_t>(s->manifest.tables_size()));
  for (size_t i = 0; i < s->tables.size(); ++i) {
    const v1::CheckpointTable& t = s->manifest.tables(static_cast<int>(i));
    const ByteBuffer& b = s->tables[i];
    std::string line = t.name() + ": rows " + std::to_string(t.rows()) + ", step " +
                       std::to_string(t.step()) + ", bytes " + std::to_string(b.size()) +
                       ", crc " +
                       std::to_string(crc32(0, reinterpret_cast<const Bytef*>(b.data()),
                                            static_cast<uInt>(b.size()))) +
                       ", chunk steps";
    for (int64_t step : t.chunk_steps()) line += " " + std::to_string(step);
    for (const v1::CheckpointTable::Counted& c : t.counted()) {
      line += ", chunk " + std::to_string(c.chunk()) + " counted worker " +
              std::to_string(c.worker()) + " at " + std::to_string(c.clock());
    }
    for (int64_t n : t.chunk_compensated()) line += ", compensated " + std::to_string(n);
    out.text.push_back(line);
    out.bytes.emplace_back(b.data(), b.size());
  }
  return out;
}

// Whether two shards' states are the same, to the bit.
inline bool Same(Shard& a, Shard& b) {
  const State x = StateOf(a), y = StateOf(b);
  CHECK(x.text == y.text);
  return x.text == y.text && x.bytes == y.bytes;
}

inline JobConfig AdamJob(const std::string& mode, uint32_t workers) {
  JobConfig c = MakeConfig(mode, 0, workers);
  c.optimizer.type = OptimizerType::kAdam;
  c.optimizer.lr = 0.01f;
  return c;
}

// A push of random gradients for all of `w`, `b` and some `emb` rows.
inline PushRequest RandomPush(uint32_t worker, int64_t clock, std::mt19937* rng) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> w(8), b(2);
  for (float& x : w) x = g(*rng);
  for (float& x : b) x = g(*rng);
  std::vector<uint64_t> keys;
  for (uint64_t k = 0; k < 40; ++k) {
    if ((*rng)() % 3 == 0) keys.push_back(k * 7919);
  }
  std::vector<float> rows(keys.size() * 2);
  for (float& x : rows) x = g(*rng);
  PushRequest p = MakePush(worker, clock, Dense("w", 0, 8), w, /*advance=*/true);
  *p.add_slices() = Dense("b", 0, 2);
  EncodeFloats(b, p.add_gradients());
  if (!keys.empty()) {
    *p.add_slices() = Sparse("emb", keys);
    EncodeFloats(rows, p.add_gradients());
  }
  return p;
}

struct Pair {
  std::unique_ptr<Shard> primary, standby;
  std::vector<v1::Mutation> log;
  std::set<uint64_t> awaited;  // the numbers calls' answers waited for
  std::function<void(uint64_t)> on_await;  // a test's, after each await
  size_t followed = 0;
  std::mutex mu;
};

inline std::unique_ptr<Pair> MakePair(const JobConfig& c) {
  auto pair = std::make_unique<Pair>();
  auto primary = Shard::Create(c, 0);
  auto standby = Shard::Create(c, 0);
  REQUIRE(primary.ok());
  REQUIRE(standby.ok());
  pair->primary = *std::move(primary);
  pair->standby = *std::move(standby);
  pair->standby->SetStandby();
  Pair* raw = pair.get();
  REQUIRE(pair->primary
              ->SetMutationLog({[raw](const v1::Mutation& m) {
                std::lock_guard<std::mutex> lock(raw->mu);
                raw->log.push_back(m);
              },
                               [raw](uint64_t sequence, std::function<void()> done) {
                                 {
                                   // After the mutation was appended.
                                   std::lock_guard<std::mutex> lock(raw->mu);
                                   CHECK(sequence <= raw->log.size());
                                   raw->awaited.insert(sequence);
                                 }
                                 if (raw->on_await) raw->on_await(sequence);
                                 done();
                               }})
              .ok());
  for (uint32_t w = 0; w < c.cluster.workers; ++w) RegisterWorker(*pair->primary, w);
  return pair;
}

// Follows the mutations logged since the last call.
inline void FollowAll(Pair& pair) {
  for (size_t i = pair.followed; i < pair.log.size(); ++i, ++pair.followed) {
    INFO("mutation " << i);
    CHECK(pair.log[i].sequence() == i + 1);  // numbered, none missing
    REQUIRE(pair.standby->Follow(pair.log[i]).ok());
  }
}

// The standby refuses `m` with `code`, and its state is still `before`.
inline void CheckRefused(Pair& pair, const State& before, const v1::Mutation& m, absl::StatusCode code) {
  const uint64_t followed = pair.standby->followed();
  const absl::Status s = pair.standby->Follow(m);
  CHECK(s.code() == code);
  const State now = StateOf(*pair.standby);
  CHECK(now.text == before.text);
  CHECK(now.bytes == before.bytes);
  CHECK(pair.standby->followed() == followed);
}

}  // namespace tessera

#endif  // TESSERA_TESTS_SERVER_REPLICATION_FIXTURES_H_
