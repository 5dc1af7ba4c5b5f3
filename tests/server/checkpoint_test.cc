// Shard checkpoints: the on-disk store (atomic writes, verified loads,
// pruning, refusals) and a shard's state through Snapshot/Restore, for every
// table kind and optimizer, bit for bit.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <thread>
#include <tuple>
#include <zlib.h>

#include "server/checkpoint.h"
#include "server/checkpointer.h"
#include "shard_fixtures.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

std::string FreshDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp ? tmp : "/tmp") + "/" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

JobConfig TablesConfig(OptimizerType optimizer, const std::string& mode = "asp") {
  JobConfig c = MakeConfig(mode, 0, 2);
  c.name = "ckpt-test";
  c.optimizer.type = optimizer;
  c.optimizer.lr = 0.1f;
  return c;
}

// A few pushes of both workers to every table, so values, slots and steps move.
void Train(Shard& shard, int rounds) {
  for (uint32_t w = 0; w < 2; ++w) RegisterWorker(shard, w);  // as after a shard restarts
  v1::StatsResponse stats;
  shard.Stats(&stats);
  for (int i = 0; i < rounds; ++i) {
    for (uint32_t w = 0; w < 2; ++w) {
      const int64_t clock = stats.worker_clocks(static_cast<int>(w));
      PushResponse resp;
      std::vector<float> g(8);
      for (size_t j = 0; j < g.size(); ++j) g[j] = 0.1f * (i + 1) * (j + 1) * (w ? -1.0f : 1.0f);
      REQUIRE(shard.Push(MakePush(w, clock, Dense("w", 0, 8), g), &resp).ok());
      REQUIRE(shard.Push(MakePush(w, clock, Sparse("emb", {3, 17, 100 + uint64_t(i)}),
                                  {0.5f, -0.25f, 1.0f, 2.0f, -1.0f, 0.125f}),
                         &resp)
                  .ok());
    }
  }
}

// Every byte of a shard's state, as a checkpoint would hold it.
std::vector<std::string> StateBytes(Shard& shard) {
  std::unique_ptr<ShardState> s = shard.Snapshot();
  std::vector<std::string> out;
  for (size_t i = 0; i < s->tables.size(); ++i) {
    const v1::CheckpointTable& t = s->manifest.tables(static_cast<int>(i));
    std::string bytes(s->tables[i].data(), s->tables[i].size());
    if (t.sparse()) {
      // Rows come out in stripe order; sort by key so two shards compare.
      const uint64_t n = t.rows();
      const size_t row = (bytes.size() - n * 8) / std::max<uint64_t>(n, 1);
      std::vector<std::pair<uint64_t, std::string>> rows;
      for (uint64_t r = 0; r < n; ++r) {
        uint64_t key;
        std::memcpy(&key, bytes.data() + r * 8, 8);
        rows.emplace_back(key, bytes.substr(n * 8 + r * row, row));
      }
      std::sort(rows.begin(), rows.end());
      bytes.clear();
      for (auto& [key, data] : rows) bytes += std::to_string(key) + ":" + data;
      bytes += "step" + std::to_string(t.step());
    } else {
      for (int64_t step : t.chunk_steps()) bytes += "step" + std::to_string(step);
    }
    out.push_back(bytes);
  }
  for (int64_t c : s->manifest.worker_clocks()) out.push_back(std::to_string(c));
  return out;
}

TEST_CASE("every table kind and optimizer round-trips through a checkpoint bit for bit") {
  for (OptimizerType optimizer : {OptimizerType::kSgd, OptimizerType::kMomentum,
                                  OptimizerType::kAdagrad, OptimizerType::kAdam}) {
    INFO("optimizer " << NameOf(optimizer));
    const JobConfig config = TablesConfig(optimizer);
    auto shard = MakeShard(config);
    Train(*shard, 3);
    Advance(*shard, 0, 0);
    CheckpointStore store(FreshDir(std::string("rt-") + NameOf(optimizer)), 2);
    std::unique_ptr<ShardState> cut = shard->Snapshot();
    REQUIRE(store.Write(cut.get()).ok());
    // The written cut's buffers serve the next cut (no fresh memory).
    const char* dense_buffer = cut->tables[0].data();
    shard->Recycle(std::move(cut));
    std::unique_ptr<ShardState> again = shard->Snapshot();
    CHECK(again->tables[0].data() == dense_buffer);

    auto restored = Shard::Create(config, 0);
    REQUIRE(restored.ok());
    std::vector<std::string> skipped;
    CheckpointInfo info;
    auto state = store.LoadNewest((*restored)->Identity(), -1, &skipped, &info);
    REQUIRE(state.ok());
    CHECK(skipped.empty());
    CHECK(info.clock == 0);  // worker 1 is still at clock 0
    REQUIRE((*restored)->Restore(*state).ok());
    CHECK(StateBytes(**restored) == StateBytes(*shard));
    // A recycled buffer's copy is the same as a fresh one's.
    shard->Recycle(std::move(again));
    CHECK(StateBytes(**restored) == StateBytes(*shard));
    // Optimizer slots and step counts came back too: the same pushes give
    // the same values on both.
    Train(*shard, 2);
    Train(**restored, 2);
    CHECK(StateBytes(**restored) == StateBytes(*shard));
    v1::StatsResponse stats;
    (*restored)->Stats(&stats);
    CHECK(stats.restored_clock() == 0);
    CHECK(stats.worker_clocks(0) == 1);
    CHECK(stats.worker_clocks(1) == 0);
  }
}

// Writes checkpoints of clocks 10 and 20 and returns the store's root.
std::string TwoCheckpoints(const std::string& name, Shard& shard) {
  const std::string root = FreshDir(name);
  CheckpointStore store(root, 5);
  for (int64_t clock : {10, 20}) {
    std::unique_ptr<ShardState> cut = shard.Snapshot();
    cut->manifest.set_clock(clock);
    REQUIRE(store.Write(cut.get()).ok());
  }
  REQUIRE(CheckpointStore::List(root).size() == 2);
  return root;
}

int64_t LoadedClock(const std::string& root, Shard& shard, std::vector<std::string>* skipped) {
  CheckpointStore store(root, 5);
  CheckpointInfo info;
  auto state = store.LoadNewest(shard.Identity(), -1, skipped, &info);
  REQUIRE(state.ok());
  return state->manifest.clock();
}

void FlipByte(const std::string& path, long at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(at);
  char c;
  f.get(c);
  f.seekp(at);
  f.put(static_cast<char>(c ^ 0x40));
}

TEST_CASE("a torn, truncated or bit-flipped checkpoint is skipped for the previous good one") {
  auto shard = MakeShard(TablesConfig(OptimizerType::kAdam));
  Train(*shard, 2);
  struct Damage {
    const char* what;
    std::function<void(const std::string& newest)> apply;
    const char* reason;
  };
  const std::vector<Damage> damages = {
      {"data truncated", [](const std::string& p) { REQUIRE(truncate((p + "/data").c_str(), 10) == 0); },
       "truncated or torn"},
      {"data bit flipped", [](const std::string& p) { FlipByte(p + "/data", 40); }, "checksum"},
      {"manifest bit flipped", [](const std::string& p) { FlipByte(p + "/MANIFEST", 20); },
       "checksum mismatch"},
      {"manifest missing", [](const std::string& p) { fs::remove(p + "/MANIFEST"); },
       "No such file"},
      {"data missing", [](const std::string& p) { fs::remove(p + "/data"); }, "missing"},
  };
  for (const Damage& d : damages) {
    INFO(d.what);
    const std::string root = TwoCheckpoints("damage", *shard);
    d.apply(CheckpointStore::List(root).back());
    std::vector<std::string> skipped;
    CHECK(LoadedClock(root, *shard, &skipped) == 10);
    REQUIRE(skipped.size() == 1);
    CHECK_THAT(skipped[0], Catch::Contains(d.reason));
  }
}

// Rewrites the newest checkpoint under `root` as an attacker who can write
// the shared volume would: `edit` changes the manifest and the data, then
// every checksum is made valid again.
void Craft(const std::string& root,
           const std::function<void(v1::CheckpointManifest&, std::string& data)>& edit) {
  const std::string path = CheckpointStore::List(root).back();
  auto m = CheckpointStore::ReadManifest(path);
  REQUIRE(m.ok());
  std::ifstream in(path + "/data", std::ios::binary);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  edit(*m, data);
  for (v1::CheckpointTable& t : *m->mutable_tables()) {
    if (t.offset() <= data.size() && t.bytes() <= data.size() - t.offset()) {
      t.set_crc32(static_cast<uint32_t>(
          crc32_z(0, reinterpret_cast<const Bytef*>(data.data() + t.offset()), t.bytes())));
    }
  }
  std::ofstream(path + "/data", std::ios::binary | std::ios::trunc) << data;
  REQUIRE(CheckpointStore::WriteManifest(path, *m).ok());
}

int TableIndex(const v1::CheckpointManifest& m, const std::string& name) {
  for (int i = 0; i < m.tables_size(); ++i) {
    if (m.tables(i).name() == name) return i;
  }
  FAIL("no table " << name);
  return -1;
}

TEST_CASE(
    "dc's and gap_aware's statistics round-trip; a checkpoint written without them restores") {
  for (StalenessCompensation compensation :
       {StalenessCompensation::kDc, StalenessCompensation::kGapAware}) {
    INFO((compensation == StalenessCompensation::kDc ? "dc" : "gap_aware"));
    JobConfig config = TablesConfig(OptimizerType::kAdam);
    config.optimizer.staleness_compensation = compensation;
    auto shard = MakeShard(config);
    // Pushes computed from pulled values, so that dc compensates them.
    for (int64_t clock = 0; clock < 3; ++clock) {
      for (uint32_t w = 0; w < 2; ++w) {
        REQUIRE(StartPull(*shard, w, clock, Dense("w", 0, 8))->status->ok());
      }
      for (uint32_t w = 0; w < 2; ++w) {
        std::vector<float> g(8);
        for (size_t j = 0; j < g.size(); ++j)
          g[j] = 0.1f * (clock + 1) * (j + 1) * (w ? -1.f : 1.f);
        PushRequest p = MakePush(w, clock, Dense("w", 0, 8), g, /*advance=*/true);
        p.set_values_clock(clock);
        PushResponse r;
        REQUIRE(shard->Push(p, &r).ok());
      }
    }
    std::unique_ptr<ShardState> cut = shard->Snapshot();
    const int w = TableIndex(cut->manifest, "w");
    const v1::CheckpointTable& t = cut->manifest.tables(w);
    REQUIRE(t.chunk_compensated_size() == 1);
    CHECK(t.chunk_compensated(0) == 6);  // 3 clocks of 2 workers
    // Values, two Adam slots and the statistic, 8 floats each.
    REQUIRE(cut->tables[static_cast<size_t>(w)].size() == 4 * 8 * sizeof(float));
    auto restored = Shard::Create(config, 0);
    REQUIRE(restored.ok());
    REQUIRE((*restored)->Restore(*cut).ok());
    CHECK(StateBytes(**restored) == StateBytes(*shard));

    // As written before the statistic was kept: it starts again at zero.
    cut->tables[static_cast<size_t>(w)].Shrink(3 * 8 * sizeof(float));
    cut->manifest.mutable_tables(w)->clear_chunk_compensated();
    auto older = Shard::Create(config, 0);
    REQUIRE(older.ok());
    REQUIRE((*older)->Restore(*cut).ok());
    std::unique_ptr<ShardState> again = (*older)->Snapshot();
    const std::string bytes(again->tables[static_cast<size_t>(w)].data(), 4 * 8 * sizeof(float));
    const std::string expected = std::string(cut->tables[static_cast<size_t>(w)].data(),
                                             3 * 8 * sizeof(float)) +
                                 std::string(8 * sizeof(float), '\0');
    CHECK(bytes == expected);
    CHECK(again->manifest.tables(w).chunk_compensated(0) == 0);
    // Cut short otherwise, it is refused.
    cut->tables[static_cast<size_t>(w)].Shrink(2 * 8 * sizeof(float));
    auto refused = Shard::Create(config, 0);
    REQUIRE(refused.ok());
    CHECK((*refused)->Restore(*cut).code() == absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("a crafted checkpoint with valid checksums is skipped for the previous good one") {
  JobConfig config = TablesConfig(OptimizerType::kAdam);
  config.server.max_sparse_rows = 100;
  auto shard = MakeShard(config);
  Train(*shard, 2);
  using Edit = std::function<void(v1::CheckpointManifest&, std::string&)>;
  const std::vector<std::tuple<const char*, Edit, const char*>> crafted = {
      {"sparse rows + 2^61 (the product wraps to the same byte count)",
       [](v1::CheckpointManifest& m, std::string&) {
         v1::CheckpointTable* t = m.mutable_tables(TableIndex(m, "emb"));
         t->set_rows(t->rows() + (uint64_t{1} << 61));
       },
       "rows of"},
      {"a worker clock of INT64_MAX",
       [](v1::CheckpointManifest& m, std::string&) {
         m.set_worker_clocks(0, std::numeric_limits<int64_t>::max());
       },
       "worker clock"},
      {"a worker clock of INT64_MIN",
       [](v1::CheckpointManifest& m, std::string&) {
         m.set_worker_clocks(1, std::numeric_limits<int64_t>::min());
       },
       "worker clock"},
      {"the cut's clock at INT64_MAX",
       [](v1::CheckpointManifest& m, std::string&) {
         m.set_clock(std::numeric_limits<int64_t>::max());
       },
       "checkpoint clock"},
      {"a replication log number of UINT64_MAX (the next would wrap to 0)",
       [](v1::CheckpointManifest& m, std::string&) {
         m.set_log_sequence(std::numeric_limits<uint64_t>::max());
       },
       "log_sequence"},
      {"a chunk's optimizer step of INT64_MAX",
       [](v1::CheckpointManifest& m, std::string&) {
         m.mutable_tables(TableIndex(m, "w"))->set_chunk_steps(0, std::numeric_limits<int64_t>::max());
       },
       "chunk step"},
      {"a chunk counted for worker 7 of 2",
       [](v1::CheckpointManifest& m, std::string&) {
         v1::CheckpointTable::Counted* c = m.mutable_tables(TableIndex(m, "w"))->add_counted();
         c->set_worker(7);
         c->set_clock(1);
       },
       "for worker 7"},
      {"a chunk counted twice for one worker",
       [](v1::CheckpointManifest& m, std::string&) {
         v1::CheckpointTable* t = m.mutable_tables(TableIndex(m, "w"));
         for (int64_t clock : {1, 2}) {
           v1::CheckpointTable::Counted* c = t->add_counted();
           c->set_worker(1);
           c->set_clock(clock);
         }
       },
       "twice"},
      {"compensated updates for a table without compensation",
       [](v1::CheckpointManifest& m, std::string&) {
         m.mutable_tables(TableIndex(m, "w"))->add_chunk_compensated(1);
       },
       "compensated updates"},
      {"1 MiB past the last table, in the data file and its size",
       [](v1::CheckpointManifest& m, std::string& data) {
         data.append(1 << 20, '\0');
         m.set_data_bytes(data.size());
       },
       "bytes of the data file's"},
      {"a sparse table grown past server.max_sparse_rows, counts consistent",
       [](v1::CheckpointManifest& m, std::string& data) {
         // 1,000 rows of key, 2 values, 2 x 2 Adam slots: 8 + 24 bytes.
         const int i = TableIndex(m, "emb");
         v1::CheckpointTable* t = m.mutable_tables(i);
         const uint64_t n = 1000;
         std::string rows(n * 8 + n * 24, '\0');
         for (uint64_t k = 0; k < n; ++k) std::memcpy(&rows[k * 8], &k, 8);
         data.replace(t->offset(), t->bytes(), rows);
         const int64_t grown = static_cast<int64_t>(rows.size()) - static_cast<int64_t>(t->bytes());
         t->set_rows(n);
         t->set_bytes(rows.size());
         for (int j = i + 1; j < m.tables_size(); ++j) {
           m.mutable_tables(j)->set_offset(m.tables(j).offset() + grown);
         }
         m.set_data_bytes(data.size());
       },
       "server.max_sparse_rows"},
      {"a plan of epoch 2^62",
       [](v1::CheckpointManifest& m, std::string&) {
         v1::EpochPlan* p = m.add_epoch_plans();
         p->set_epoch(int64_t{1} << 62);
         p->add_shares(64);
         p->add_shares(64);
       },
       "training.epochs"},
  };
  for (const auto& [what, edit, reason] : crafted) {
    INFO(what);
    const std::string root = TwoCheckpoints("crafted", *shard);
    Craft(root, edit);
    CheckpointStore store(root, 5);
    std::vector<std::string> skipped;
    auto state = store.LoadNewest(shard->Identity(), -1, &skipped, nullptr,
                                  [&](const v1::CheckpointManifest& m) {
                                    return shard->CheckManifest(m);
                                  });
    REQUIRE(state.ok());
    CHECK(state->manifest.clock() == 10);
    REQUIRE(skipped.size() == 1);
    CHECK_THAT(skipped[0], Catch::Contains(reason));
  }
}

TEST_CASE("a checkpoint whose data holds a NaN or a key twice is refused at restore, whole") {
  auto shard = MakeShard(TablesConfig(OptimizerType::kAdam));
  Train(*shard, 2);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  using Edit = std::function<void(v1::CheckpointManifest&, std::string&)>;
  const std::vector<std::tuple<const char*, Edit, const char*>> crafted = {
      {"a NaN parameter",
       [nan](v1::CheckpointManifest& m, std::string& data) {
         std::memcpy(&data[m.tables(TableIndex(m, "w")).offset() + 4], &nan, 4);
       },
       "NaN"},
      {"an Inf Adam moment of a sparse row",
       [](v1::CheckpointManifest& m, std::string& data) {
         const v1::CheckpointTable& t = m.tables(TableIndex(m, "emb"));
         const float inf = std::numeric_limits<float>::infinity();
         std::memcpy(&data[t.offset() + t.rows() * 8 + 12], &inf, 4);
       },
       "NaN or Inf"},
      {"a sparse key twice",
       [](v1::CheckpointManifest& m, std::string& data) {
         const v1::CheckpointTable& t = m.tables(TableIndex(m, "emb"));
         std::memcpy(&data[t.offset() + 8], &data[t.offset()], 8);
       },
       "twice"},
  };
  for (const auto& [what, edit, reason] : crafted) {
    INFO(what);
    JobConfig config = TablesConfig(OptimizerType::kAdam);
    config.checkpoint.dir = FreshDir("crafted-data");
    const std::string root = TwoCheckpoints("crafted-data/shard-0", *shard);
    Craft(root, edit);
    auto fresh = Shard::Create(config, 0);
    REQUIRE(fresh.ok());
    const absl::Status s = Checkpointer::Restore(fresh->get(), config);
    CHECK(s.code() == absl::StatusCode::kFailedPrecondition);  // a start-up error: exit 2
    CHECK_THAT(std::string(s.message()), Catch::Contains(reason));
  }
}

TEST_CASE("a checkpoint of another job, layout or sharding is refused naming what differs") {
  auto shard = MakeShard(TablesConfig(OptimizerType::kAdam));
  const std::string root = TwoCheckpoints("identity", *shard);
  struct Other {
    const char* what;
    JobConfig config;
    const char* names;
  };
  JobConfig renamed = TablesConfig(OptimizerType::kAdam);
  renamed.name = "someone-else";
  JobConfig resharded = MakeConfig("asp", 0, 2, /*servers=*/2);
  resharded.name = "ckpt-test";
  resharded.optimizer.type = OptimizerType::kAdam;
  JobConfig other_optimizer = TablesConfig(OptimizerType::kSgd);
  JobConfig more_workers = MakeConfig("asp", 0, 3);
  more_workers.name = "ckpt-test";
  more_workers.optimizer.type = OptimizerType::kAdam;
  JobConfig bigger = TablesConfig(OptimizerType::kAdam);
  bigger.model.tables[0].size = 16;
  for (const Other& o : std::vector<Other>{{"job", renamed, "the job name"},
                                          {"sharding", resharded, "the shard count is 1"},
                                          {"optimizer", other_optimizer, "optimizer.type"},
                                          {"workers", more_workers, "cluster.workers"},
                                          {"layout", bigger, "table 0"}}) {
    INFO(o.what);
    auto other = Shard::Create(o.config, 0);
    REQUIRE(other.ok());
    CheckpointStore store(root, 5);
    std::vector<std::string> skipped;
    auto state = store.LoadNewest((*other)->Identity(), -1, &skipped, nullptr);
    CHECK(state.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(state.status().message()), Catch::Contains(o.names));
    // And the checkpointer turns it into a start-up error (exit 2), not a fresh start.
    JobConfig with_dir = o.config;
    with_dir.checkpoint.dir = fs::path(root).parent_path().string() + "/identity-parent";
    fs::create_directories(with_dir.checkpoint.dir);
    fs::remove_all(with_dir.checkpoint.dir + "/shard-0");
    fs::copy(root, with_dir.checkpoint.dir + "/shard-0", fs::copy_options::recursive);
    absl::Status s = Checkpointer::Restore(other->get(), with_dir);
    CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  }
}

TEST_CASE("restore: never ignores, required insists, auto starts fresh on an empty folder") {
  JobConfig config = TablesConfig(OptimizerType::kAdam);
  config.checkpoint.dir = FreshDir("policy");
  auto shard = Shard::Create(config, 0);
  REQUIRE(shard.ok());
  config.checkpoint.restore = RestorePolicy::kAuto;
  CHECK(Checkpointer::Restore(shard->get(), config).ok());
  config.checkpoint.restore = RestorePolicy::kRequired;
  absl::Status s = Checkpointer::Restore(shard->get(), config);
  CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(s.message()), Catch::Contains("no valid checkpoint"));
  config.checkpoint.restore = RestorePolicy::kNever;
  CHECK(Checkpointer::Restore(shard->get(), config).ok());
}

TEST_CASE("the store keeps the newest K, and the newest common clock is the resume cut") {
  auto shard = MakeShard(TablesConfig(OptimizerType::kSgd));
  const std::string dir = FreshDir("prune");
  CheckpointStore s0(dir + "/shard-0", 2), s1(dir + "/shard-1", 2);
  // A leftover of a crash mid-write is cleaned away and never listed.
  fs::create_directories(dir + "/shard-0/.tmp-ckpt-000000000099-0000000000000");
  CheckpointStore again(dir + "/shard-0", 2);
  CHECK_FALSE(fs::exists(dir + "/shard-0/.tmp-ckpt-000000000099-0000000000000"));
  for (int64_t clock : {5, 10, 15}) {
    std::unique_ptr<ShardState> cut = shard->Snapshot();
    cut->manifest.set_clock(clock);
    REQUIRE(s0.Write(cut.get()).ok());
  }
  for (int64_t clock : {10, 14}) {
    std::unique_ptr<ShardState> cut = shard->Snapshot();
    cut->manifest.set_clock(clock);
    REQUIRE(s1.Write(cut.get()).ok());
  }
  CHECK(CheckpointStore::List(dir + "/shard-0").size() == 2);  // 10 and 15
  auto common = NewestCommonClock(dir, 2);
  REQUIRE(common.ok());
  CHECK(*common == 10);
  CHECK(NewestCommonClock(dir, 3).status().code() == absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

TEST_CASE("a BSP shard cuts once per checkpoint.every_seconds, not again while a cut copies") {
  // A table whose copy takes a while: a checkpointer tick (every 50 ms) that
  // fell inside the copy used to see the timer still due and ask for a second
  // cut at the very next clock.
  const std::string dir = FreshDir("bsp-cut-once");
  auto config = ParseJobConfig(R"(
cluster: {servers: ['127.0.0.1:1'], workers: 1}
consistency: {mode: bsp}
model:
  type: tables
  tables: [{name: w, kind: dense, size: 4194304, init: {type: constant, value: 1}}]
optimizer: {type: adam, lr: 0.1}
checkpoint: {every_seconds: 0.2, keep: 1000}
)",
                               {"checkpoint.dir=" + dir});
  REQUIRE(config.ok());
  auto shard = Shard::Create(*config, 0);
  REQUIRE(shard.ok());
  {
    Checkpointer checkpointer(shard->get(), *config);
    v1::RegisterRequest r;
    r.set_session(SessionOf(0));
    r.set_job(config->name);
    r.set_job_layout(config->LayoutText());
    v1::RegisterResponse registered;
    REQUIRE((*shard)->Register(r, &registered).ok());
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(4);
    for (int64_t clock = 0; std::chrono::steady_clock::now() < end; ++clock) {
      v1::ClockRequest request;
      request.set_session(SessionOf(0));
      request.set_clock(clock);
      v1::ClockResponse response;
      REQUIRE((*shard)->Clock(request, &response).ok());
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  // (clock, wall ms when the cut was taken) of every checkpoint written.
  std::vector<std::pair<int64_t, int64_t>> cuts;
  for (const auto& entry : fs::directory_iterator(dir + "/shard-0")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("ckpt-", 0) == 0) {
      cuts.emplace_back(std::stoll(name.substr(5, 12)), std::stoll(name.substr(18)));
    }
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.pop_back();  // the final one, at shutdown, may follow any other
  std::string listed;
  for (const auto& [clock, ms] : cuts) listed += std::to_string(clock) + "@" + std::to_string(ms) + " ";
  INFO("cuts (clock@unix ms): " << listed);
  REQUIRE(cuts.size() >= 2);
  // Each cut is taken right after it is decided, so two cuts less than
  // every_seconds apart are two decisions: the second cut at the next clock
  // (timed, not counted in clocks: a slow build's copy may hold the clock
  // still for most of the interval).
  for (size_t i = 1; i < cuts.size(); ++i) CHECK(cuts[i].second - cuts[i - 1].second >= 190);
}

}  // namespace
}  // namespace tessera
