// Sparse models through the PS (model.type ctr): the click-log generator and
// its metrics, the worker's key de-duplication and routing, row pulls and
// pushes against real shards (in process, and over gRPC), the model's
// gradients against finite differences, and BSP with 2 workers equal to one
// process with the combined batch, sparse rows included.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/partition.h"
#include "server/shard.h"
#include "server/shard_server.h"
#include "tests/worker/fixtures.h"
#include "worker/dataset.h"
#include "worker/example_stream.h"
#include "worker/grpc_ps_client.h"
#include "worker/local_ps_client.h"
#include "worker/model.h"
#include "worker/ps_client.h"
#include "worker/row_cache.h"
#include "worker/trainer.h"

namespace tessera {
namespace {

JobConfig CtrConfig(std::vector<std::string> sets = {}) {
  auto c = ParseJobConfig(R"(
cluster: {servers: ["local:1", "local:2"], workers: 1}
consistency: {mode: bsp}
model: {type: ctr, fields: 4, vocab: 50, embedding_dim: 3, dense_features: 2, layers: [5], seed: 2}
optimizer: {type: adagrad, lr: 0.1}
data: {dataset: synthetic_ctr, synthetic_train: 2048, synthetic_test: 512, zipf_exponent: 1.2}
worker: {pull_timeout_ms: 30000, progress_interval_s: 1000}
)",
                          sets);
  INFO(c.status().ToString());
  REQUIRE(c.ok());
  return *c;
}

TEST_CASE("ctr config: tables derive from the model, and the data must match it", "[ctr]") {
  const JobConfig c = CtrConfig();
  const auto tables = c.Tables();
  REQUIRE(tables.size() == 6);  // embedding, wide, fc0 w/b (inputs 2 + 4*3), fc1 w/b (5 -> 2)
  CHECK(tables[0].name == "embedding");
  CHECK(tables[0].kind == TableKind::kSparse);
  CHECK(tables[0].dim == 3);
  CHECK(tables[1].name == "wide");
  CHECK(tables[1].dim == 1);
  CHECK(tables[2].size == (2 + 4 * 3) * 5);
  CHECK(tables[5].size == 2);
  // The model's own sizes agree with the tables the shards are built from.
  auto backend = MakeCpuBackend();
  CtrModel model(c.model, backend.get(), 8);
  const std::vector<size_t> sizes = model.TableSizes();
  REQUIRE(sizes.size() == tables.size());
  for (size_t t = 0; t < tables.size(); ++t) {
    CHECK(sizes[t] == (tables[t].kind == TableKind::kDense ? tables[t].size : 0));
  }
  const std::string cluster = "cluster: {servers: ['127.0.0.1:1']}\n";
  auto bad = ParseJobConfig(
      cluster + "model: {type: ctr, layers: [8]}\ndata: {dataset: fashion_mnist}\n", {});
  REQUIRE_FALSE(bad.ok());
  INFO(bad.status().message());
  CHECK(std::string(bad.status().message()).find("data.dataset") != std::string::npos);
  auto no_layers =
      ParseJobConfig(cluster + "model: {type: ctr}\ndata: {dataset: synthetic_ctr}\n", {});
  REQUIRE_FALSE(no_layers.ok());
  INFO(no_layers.status().message());
  CHECK(std::string(no_layers.status().message()).find("model.layers") != std::string::npos);
}

TEST_CASE("a table may train with an optimizer of its own (wide on ftrl, the rest adagrad)",
          "[ctr]") {
  JobConfig c = CtrConfig({"consistency.mode=asp",  // a push applies at once
                           "optimizer.tables.wide.type=ftrl", "optimizer.tables.wide.alpha=0.5",
                           "optimizer.tables.wide.l1=0.1", "optimizer.tables.wide.l2=0.2"});
  CHECK(c.OptimizerFor("wide").type == OptimizerType::kFtrl);
  CHECK(c.OptimizerFor("wide").alpha == 0.5f);
  CHECK(c.OptimizerFor("embedding").type == OptimizerType::kAdagrad);
  CHECK(c.OptimizerFor("fc0.weight").lr == 0.1f);
  // An entry starts from the job's optimizer: only what it names changes.
  CHECK(c.OptimizerFor("wide").initial_accumulator == c.optimizer.initial_accumulator);
  auto unknown = ParseJobConfig(
      "cluster: {servers: ['127.0.0.1:1']}\n"
      "model: {type: ctr, layers: [8]}\ndata: {dataset: synthetic_ctr}\n"
      "optimizer: {tables: {wides: {type: ftrl}}}\n",
      {});
  REQUIRE_FALSE(unknown.ok());
  INFO(unknown.status().message());
  CHECK(std::string(unknown.status().message()).find("optimizer.tables.wides") !=
        std::string::npos);
  // On the shard: the wide rows follow FTRL, the embedding rows Adagrad.
  Cluster cluster(c);
  LocalPsClient client(c, 0, cluster.ptrs());
  REQUIRE(client.Connect().ok());
  RowSet grads(2);
  grads[0].dim = 3;
  grads[0].keys = {CtrKey(1, 5)};
  grads[0].values = {1.0f, 1.0f, 1.0f};
  grads[1].table = 1;
  grads[1].keys = {CtrKey(1, 5)};
  grads[1].values = {1.0f};
  RowSet before = grads;
  REQUIRE(client.PullRows(0, &before, RowPull::kTrain).ok());
  REQUIRE(client.PushRows(0, grads).ok());
  RowSet after = grads;
  REQUIRE(client.PullRows(0, &after, RowPull::kTrain).ok());
  // FTRL from z = n = 0 and w = 0 (wide starts at zeros): w = -(1 - 0.1) / ((1 + 1)/0.5 + 0.2).
  CHECK(before[1].values[0] == 0.0f);
  CHECK(after[1].values[0] == Approx(-0.9 / 4.2));
  // Adagrad: w -= lr g / sqrt(initial_accumulator + g^2).
  CHECK(after[0].values[0] == Approx(before[0].values[0] - 0.1 / std::sqrt(1.1)).margin(1e-6));
}

TEST_CASE("synthetic click log: deterministic, Zipf ids, Bayes logloss matches Monte Carlo",
          "[ctr]") {
  JobConfig c = CtrConfig({"model.vocab=100000", "model.fields=8", "data.synthetic_train=200000"});
  const Dataset a = SyntheticCtrDataset(c.model, c.data, true);
  const Dataset b = SyntheticCtrDataset(c.model, c.data, true);
  REQUIRE(a.size() == 200000);
  CHECK(a.ids == b.ids);
  CHECK(a.y == b.y);
  CHECK(a.x == b.x);
  const Dataset test = SyntheticCtrDataset(c.model, c.data, false);
  CHECK(test.ids != std::vector<uint64_t>(a.ids.begin(), a.ids.begin() + test.ids.size()));
  // Zipf: id 0 is the most frequent, and frequencies fall with the rank.
  std::vector<int64_t> count(c.model.vocab);
  for (uint64_t id : a.ids) {
    REQUIRE(id < c.model.vocab);
    ++count[id];
  }
  CHECK(count[0] > count[1]);
  CHECK(count[1] > count[10]);
  CHECK(count[10] > count[1000]);
  // The labels are Bernoulli(p): the empirical log loss of predicting p is
  // the Bayes log loss (mean binary entropy of p) up to sampling noise, and
  // it is well below the base rate's.
  const double bayes = MeanBinaryEntropy(a.p);
  const double monte_carlo = LogLoss(a.p, a.y);
  CHECK(std::abs(bayes - monte_carlo) < 0.005);
  double clicks = 0;
  for (int32_t y : a.y) clicks += y;
  const double rate = clicks / a.size();
  CHECK(rate > 0.1);
  CHECK(rate < 0.5);
  const double base = LogLoss(std::vector<float>(a.size(), float(rate)), a.y);
  CHECK(base - bayes > 0.05);
  CHECK(Auc(a.p, a.y) > 0.7);
}

TEST_CASE("AUC by hand", "[ctr]") {
  CHECK(Auc({0.1f, 0.4f, 0.35f, 0.8f}, {0, 0, 1, 1}) == Approx(0.75));
  CHECK(Auc({0.5f, 0.5f}, {0, 1}) == Approx(0.5));  // a tie counts half
  CHECK(Auc({0.2f, 0.3f}, {1, 1}) == Approx(0.5));  // one class only
  CHECK(LogLoss({0.5f}, {1}) == Approx(std::log(2.0)));
}

TEST_CASE("a batch's keys: unique, per field, every example's slot names its key", "[ctr]") {
  Dataset d;
  d.fields = 3;
  d.ids = {7, 1, 7,   // example 0: field 0 and field 2 share id 7 but not a key
           7, 2, 7,   // example 1: repeats example 0's field-0 and field-2 keys
           9, 1, 7};  // example 2
  d.y = {0, 1, 0};
  CtrRows rows;
  rows.Build(d);
  REQUIRE(rows.slots.size() == 9);
  CHECK(rows.keys.size() == 5);  // (0,7) (1,1) (2,7) (1,2) (0,9)
  CHECK(std::set<uint64_t>(rows.keys.begin(), rows.keys.end()).size() == rows.keys.size());
  for (uint32_t i = 0; i < 3; ++i) {
    for (uint32_t f = 0; f < 3; ++f) {
      CHECK(rows.keys[rows.slots[i * 3 + f]] == CtrKey(f, d.ids[i * 3 + f]));
    }
  }
  rows.Build(Dataset{.fields = 3});  // an empty batch
  CHECK(rows.keys.empty());
  CHECK(rows.slots.empty());
}

TEST_CASE("row routing: every key to its shard, sorted, each once", "[ctr]") {
  RowSet rows(2);
  rows[0].dim = 3;
  rows[1].table = 1;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 500; ++i) rows[0].keys.push_back(rng());
  rows[1].keys = {5, 1, 3};
  const auto route = ShardRequests::RouteRows(rows, 3);
  REQUIRE(route.size() == 3);
  for (size_t t = 0; t < rows.size(); ++t) {
    size_t seen = 0;
    for (uint32_t s = 0; s < 3; ++s) {
      const auto& positions = route[s][t];
      seen += positions.size();
      for (size_t j = 0; j < positions.size(); ++j) {
        CHECK(SparseShardOf(rows[t].keys[positions[j]], 3) == s);
        if (j > 0) CHECK(rows[t].keys[positions[j - 1]] < rows[t].keys[positions[j]]);
      }
    }
    CHECK(seen == rows[t].keys.size());
  }
  // No rows at all: no shard gets a key.
  const auto none = ShardRequests::RouteRows(RowSet(1), 2);
  CHECK(none[0][0].empty());
  CHECK(none[1][0].empty());
}

TEST_CASE("row cache: rows serve later clocks while SSP allows, never under BSP or ASP", "[ctr]") {
  ConsistencyConfig ssp;
  ssp.mode = ConsistencyMode::kSsp;
  ssp.staleness = 2;
  RowCache cache(ssp, 4);
  REQUIRE(cache.enabled());
  RowSet rows(2);
  rows[0].dim = 2;
  rows[1].table = 1;
  rows[0].keys = rows[1].keys = {10, 20, 30};
  std::vector<uint32_t> missing = cache.Serve(5, &rows);
  CHECK(missing == std::vector<uint32_t>{0, 1, 2});
  rows[0].values = {1, 1, 2, 2, 3, 3};
  rows[1].values = {-1, -2, -3};
  cache.Store(rows, missing, /*guaranteed=*/4);  // pulled at clock 5 holding clocks < 4
  // Clock 6: 4 >= 6 - 2, fresh; a new key is missing.
  RowSet next(2);
  next[0].dim = 2;
  next[1].table = 1;
  next[0].keys = next[1].keys = {30, 40, 10};
  missing = cache.Serve(6, &next);
  CHECK(missing == std::vector<uint32_t>{1});
  CHECK(next[0].values[0] == 3.0f);
  CHECK(next[0].values[1] == 3.0f);
  CHECK(next[1].values[0] == -3.0f);
  CHECK(next[0].values[4] == 1.0f);
  CHECK(next[1].values[2] == -1.0f);
  CHECK(cache.hits() == 2);
  CHECK(cache.misses() == 4);
  // Clock 7: 4 < 7 - 2, stale: pulled again.
  missing = cache.Serve(7, &next);
  CHECK(missing.size() == 3);
  // Bounded: 4 rows at most; stale rows go first, then all.
  next[0].values.assign(6, 0.0f);
  next[1].values.assign(3, 0.0f);
  cache.Store(next, missing, /*guaranteed=*/6);
  CHECK(cache.size() <= 4);
  cache.Invalidate();
  CHECK(cache.size() == 0);
  CHECK(cache.Serve(7, &next).size() == 3);
  // BSP and ASP: every row is pulled at every clock.
  for (ConsistencyMode mode : {ConsistencyMode::kBsp, ConsistencyMode::kAsp}) {
    ConsistencyConfig c;
    c.mode = mode;
    c.staleness = 3;
    RowCache off(c, 100);
    CHECK_FALSE(off.enabled());
    off.Store(rows, {0, 1, 2}, 100);
    CHECK(off.Serve(5, &rows).size() == 3);
  }
}

// Pulls `keys` of both sparse tables through `client` at `clock`.
RowSet Rows(PsClient& client, const std::vector<uint64_t>& keys, int64_t clock, uint32_t dim,
            RowPull mode = RowPull::kTrain) {
  RowSet rows(2);
  rows[0].dim = dim;
  rows[0].keys = keys;
  rows[1].table = 1;
  rows[1].keys = keys;
  auto pulled = client.PullRows(clock, &rows, mode);
  INFO(pulled.status().ToString());
  REQUIRE(pulled.ok());
  return rows;
}

// Rows the shards hold, over every sparse table.
uint64_t RowsHeld(const std::vector<Shard*>& shards) {
  uint64_t rows = 0;
  for (Shard* shard : shards) {
    v1::StatsResponse stats;
    shard->Stats(&stats);
    for (const auto& t : stats.tables()) rows += t.rows();
  }
  return rows;
}

void CheckPushPull(PsClient& client, const std::string& what, const std::vector<Shard*>& shards) {
  INFO(what);
  REQUIRE(client.Connect().ok());
  std::vector<uint64_t> keys;
  for (uint64_t k = 0; k < 40; ++k) keys.push_back(CtrKey(k % 4, k * 977));
  // An evaluation's pull reads the initial values and keeps no row; a
  // training pull of the same keys then reads the same values, kept.
  RowSet evaluated = Rows(client, keys, 0, 3, RowPull::kEvaluate);
  CHECK(RowsHeld(shards) == 0);
  RowSet before = Rows(client, keys, 0, 3);
  CHECK(RowsHeld(shards) == 2 * keys.size());
  CHECK(evaluated[0].values == before[0].values);
  CHECK(evaluated[1].values == before[1].values);
  REQUIRE(before[0].values.size() == keys.size() * 3);
  REQUIRE(before[1].values.size() == keys.size());
  // A different order of the same keys reads the same rows.
  std::vector<uint64_t> reversed(keys.rbegin(), keys.rend());
  RowSet again = Rows(client, reversed, 0, 3);
  for (size_t k = 0; k < keys.size(); ++k) {
    for (int j = 0; j < 3; ++j) {
      CHECK(again[0].values[(keys.size() - 1 - k) * 3 + j] == before[0].values[k * 3 + j]);
    }
  }
  RowSet grads = before;
  for (size_t i = 0; i < grads[0].values.size(); ++i) grads[0].values[i] = 0.5f;
  for (size_t i = 0; i < grads[1].values.size(); ++i) grads[1].values[i] = -1.0f;
  REQUIRE(client.PushRows(0, grads).ok());
  REQUIRE(client.PushRows(0, grads).ok());  // a retry of the same piece: applied once
  ParameterSet none;
  REQUIRE(client.PullDense(0, &none).ok());
  ParameterSet zero_grads;
  for (auto& t : none) zero_grads.push_back(std::vector<float>(t.size(), 0.0f));
  REQUIRE(client.PushDense(0, zero_grads, std::nullopt).ok());
  RowSet after = Rows(client, keys, 1, 3);
  // Adagrad's first step moves each value by lr * g / sqrt(initial_accumulator + g^2).
  const double step_e = 0.1 * 0.5 / std::sqrt(0.1 + 0.25);
  const double step_w = 0.1 * 1.0 / std::sqrt(0.1 + 1.0);
  for (size_t i = 0; i < after[0].values.size(); ++i) {
    CHECK(after[0].values[i] == Approx(before[0].values[i] - step_e).margin(1e-5));
  }
  for (size_t i = 0; i < after[1].values.size(); ++i) {
    CHECK(after[1].values[i] == Approx(before[1].values[i] + step_w).margin(1e-5));
  }
  // An empty row set asks no shard.
  RowSet empty(2);
  empty[1].table = 1;
  CHECK(client.PullRows(1, &empty, RowPull::kTrain).ok());
  CHECK(client.PushRows(1, empty).ok());
}

TEST_CASE("row pulls and pushes reach the owning shards, in process and over gRPC", "[ctr]") {
  {
    JobConfig c = CtrConfig();
    Cluster cluster(c);
    LocalPsClient client(c, 0, cluster.ptrs());
    CheckPushPull(client, "in process", cluster.ptrs());
  }
  {
    JobConfig c = CtrConfig();
    c.security.rank_lease_s = 0;  // a second client takes rank 0 over below
    std::vector<std::unique_ptr<ShardServer>> servers;
    std::vector<std::string> addresses;
    for (uint32_t s = 0; s < 2; ++s) {
      auto server = ShardServer::Start(c, s, "127.0.0.1:0");
      REQUIRE(server.ok());
      addresses.push_back("127.0.0.1:" + std::to_string((*server)->port()));
      servers.push_back(std::move(*server));
    }
    c.cluster.servers = addresses;
    RowSet fp32_rows;
    {
      GrpcPsClient client(c, 0);
      std::vector<Shard*> shards;
      for (const auto& server : servers) shards.push_back(server->shard());
      CheckPushPull(client, "gRPC", shards);
      std::vector<uint64_t> keys = {CtrKey(0, 1), CtrKey(3, 977), CtrKey(2, 4)};
      fp32_rows = Rows(client, keys, 1, 3);
    }
    // The same rows as bfloat16 on the wire: within bf16's 8 bits of mantissa.
    c.worker.compression.all = {CodecKind::kBf16, CodecKind::kBf16};
    GrpcPsClient bf16(c, 0);
    REQUIRE(bf16.Connect().ok());
    const RowSet bf16_rows = Rows(bf16, fp32_rows[0].keys, 1, 3);
    for (size_t t = 0; t < 2; ++t) {
      REQUIRE(bf16_rows[t].values.size() == fp32_rows[t].values.size());
      for (size_t i = 0; i < bf16_rows[t].values.size(); ++i) {
        CHECK(bf16_rows[t].values[i] ==
              Approx(fp32_rows[t].values[i]).epsilon(1.0 / 128).margin(1e-6));
      }
    }
    RowSet grads = bf16_rows;
    for (float& v : grads[1].values) v = 0.25f;  // exact in bf16
    CHECK(bf16.PushRows(1, grads).ok());
  }
}

// d(loss)/d(x) by central differences, loss as a function of one float.
template <typename Loss>
double Numeric(float* x, Loss loss) {
  const float saved = *x;
  const float h = 1e-2f;
  *x = saved + h;
  const double up = loss();
  *x = saved - h;
  const double down = loss();
  *x = saved;
  return (up - down) / (2 * h);
}

TEST_CASE("ctr model gradients match finite differences (CPU)", "[ctr]") {
  JobConfig c = CtrConfig();
  const Dataset data = SyntheticCtrDataset(c.model, c.data, true);
  auto backend = MakeCpuBackend();
  const uint32_t n = 6;
  CtrModel model(c.model, backend.get(), n);
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0, 0.5f);
  ParameterSet params;
  for (size_t size : model.TableSizes()) {
    params.emplace_back(size);
    for (float& v : params.back()) v = normal(rng);
  }
  const uint32_t indices[] = {0, 1, 2, 3, 4, 0};  // example 0 twice: repeated keys
  Dataset examples;
  GatherExamples(data, indices, n, &examples);
  CtrRows rows;
  rows.Build(examples);
  std::vector<float> embedding(rows.keys.size() * 3), wide(rows.keys.size());
  for (float& v : embedding) v = normal(rng);
  for (float& v : wide) v = normal(rng);
  const auto batch = CtrModel::Batch::Of(examples, rows, embedding.data(), wide.data());
  ParameterSet grads;
  std::vector<float> d_embedding, d_wide;
  int64_t correct = 0;
  model.TrainStep(params, batch, &grads, &d_embedding, &d_wide, &correct);
  REQUIRE(d_embedding.size() == embedding.size());
  REQUIRE(d_wide.size() == wide.size());
  auto loss = [&] {
    ParameterSet g;
    std::vector<float> e, w;
    int64_t k = 0;
    return double(model.TrainStep(params, batch, &g, &e, &w, &k));
  };
  for (size_t t = 2; t < params.size(); ++t) {
    for (size_t i = 0; i < params[t].size(); i += 7) {
      INFO("table " << t << " value " << i);
      CHECK(grads[t][i] == Approx(Numeric(&params[t][i], loss)).margin(2e-3));
    }
  }
  for (size_t i = 0; i < embedding.size(); ++i) {
    INFO("embedding value " << i);
    CHECK(d_embedding[i] == Approx(Numeric(&embedding[i], loss)).margin(2e-3));
  }
  for (size_t i = 0; i < wide.size(); ++i) {
    INFO("wide row " << i);
    CHECK(d_wide[i] == Approx(Numeric(&wide[i], loss)).margin(2e-3));
  }
  // Predict agrees with the loss: the mean logistic loss of its probabilities.
  std::vector<float> p(n);
  model.Predict(params, batch, p.data());
  CHECK(LogLoss(p, examples.y) == Approx(loss()).epsilon(1e-4));
}

TEST_CASE("ctr BSP: 2 workers of batch b equal one process of batch 2b, rows included", "[ctr]") {
  const uint32_t kBatch = 16, kSteps = 50;
  JobConfig two = CtrConfig({"cluster.workers=2", "training.batch_size=16", "training.max_steps=50",
                             "training.epochs=10"});
  two.security.rank_lease_s = 0;  // the reader below takes rank 0 over once it is silent
  const Dataset train = SyntheticCtrDataset(two.model, two.data, true);
  Cluster cluster(two);
  std::vector<std::thread> workers;
  std::atomic<int> failures{0};
  for (uint32_t rank = 0; rank < 2; ++rank) {
    workers.emplace_back([&, rank] {
      LocalPsClient client(two, rank, cluster.ptrs());
      auto backend = MakeCpuBackend();
      Trainer trainer(two, rank, &client, backend.get(), &train, nullptr);
      auto result = trainer.Run();
      if (!result.ok()) {
        UNSCOPED_INFO(result.status().ToString());
        ++failures;
      } else if (!(result->train_loss > 0.1 && result->train_loss < 1.0)) {
        // max_steps ends the run mid-epoch: the loss is that epoch's, not 0.
        UNSCOPED_INFO("rank " << rank << ": train_loss " << result->train_loss);
        ++failures;
      }
    });
  }
  for (auto& t : workers) t.join();
  REQUIRE(failures == 0);

  JobConfig one = CtrConfig({"training.batch_size=32"});
  Cluster single(one);
  LocalPsClient client(one, 0, single.ptrs());
  REQUIRE(client.Connect().ok());
  auto backend = MakeCpuBackend();
  CtrModel model(one.model, backend.get(), 2 * kBatch);
  Batcher b0(train.size(), 0, 2, kBatch, two.training.seed);
  Batcher b1(train.size(), 1, 2, kBatch, two.training.seed);
  ParameterSet params, grads;
  std::vector<float> d_embedding, d_wide;
  std::vector<uint32_t> indices;
  Dataset examples;
  CtrRows rows;
  for (uint32_t step = 0; step < kSteps; ++step) {
    const uint32_t epoch = step / b0.steps_per_epoch();
    const size_t s = step % b0.steps_per_epoch();
    REQUIRE(client.PullDense(step, &params).ok());
    indices.clear();
    for (Batcher* b : {&b0, &b1}) {
      for (uint32_t i : b->Batch(epoch, s)) indices.push_back(i);
    }
    GatherExamples(train, indices.data(), 2 * kBatch, &examples);
    rows.Build(examples);
    RowSet row_set = Rows(client, rows.keys, step, one.model.embedding_dim);
    const auto batch =
        CtrModel::Batch::Of(examples, rows, row_set[0].values.data(), row_set[1].values.data());
    int64_t correct = 0;
    model.TrainStep(params, batch, &grads, &d_embedding, &d_wide, &correct);
    row_set[0].values = d_embedding;
    row_set[1].values = d_wide;
    REQUIRE(client.PushRows(step, row_set).ok());
    REQUIRE(client.PushDense(step, grads, step).ok());
  }
  ParameterSet expected, got;
  REQUIRE(client.PullDense(kSteps, &expected).ok());
  LocalPsClient reader(two, 0, cluster.ptrs());
  REQUIRE(reader.Connect().ok());
  REQUIRE(reader.PullDense(0, &got).ok());
  double diff = 0, norm = 0, moved = 0;
  for (size_t t = 0; t < got.size(); ++t) {
    for (size_t i = 0; i < got[t].size(); ++i) {
      diff += std::pow(double(got[t][i]) - expected[t][i], 2);
      norm += std::pow(double(expected[t][i]), 2);
    }
  }
  CHECK(std::sqrt(diff / norm) < 1e-5);
  // Every row either run touched: the same values. (The reader's clock is
  // the finished workers' 50, which BSP serves at once.)
  std::vector<uint64_t> all_keys;
  for (uint32_t f = 0; f < one.model.fields; ++f) {
    for (uint64_t id = 0; id < one.model.vocab; ++id) all_keys.push_back(CtrKey(f, id));
  }
  RowSet initial_rows;
  {
    Cluster fresh(one);
    LocalPsClient fresh_client(one, 0, fresh.ptrs());
    REQUIRE(fresh_client.Connect().ok());
    initial_rows = Rows(fresh_client, all_keys, 0, one.model.embedding_dim);
  }
  const RowSet want = Rows(client, all_keys, kSteps, one.model.embedding_dim);
  const RowSet have = Rows(reader, all_keys, kSteps, one.model.embedding_dim);
  for (size_t t = 0; t < 2; ++t) {
    for (size_t i = 0; i < want[t].values.size(); ++i) {
      INFO("table " << t << " value " << i);
      CHECK(have[t].values[i] == Approx(want[t].values[i]).margin(1e-5));
      moved = std::max<double>(moved, std::abs(want[t].values[i] - initial_rows[t].values[i]));
    }
  }
  CHECK(moved > 1e-2);  // the rows did train: the comparison is not trivially true
}

TEST_CASE("a ctr model trains from a click-log file, streamed, bad lines counted", "[ctr]") {
  // Field 0's category sets the click rate (0.9 or 0.1); the rest is noise.
  std::mt19937_64 rng(3);
  const auto log = [&](int n, bool with_garbage) {
    std::string text;
    for (int i = 0; i < n; ++i) {
      const bool hot = rng() % 2;
      const bool click = rng() % 100 < (hot ? 90u : 10u);
      text += absl::StrCat(click ? 1 : 0, "\t", rng() % 50, "\t\t", hot ? "hot" : "cold", "\t",
                           rng() % 30, "\t\t", rng() % 7, "\n");
      if (with_garbage && i == 1000) text += "this is not a click log\n";
    }
    return text;
  };
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string train = std::string(dir ? dir : "/tmp") + "/clicks-train.tsv";
  const std::string test = std::string(dir ? dir : "/tmp") + "/clicks-test.tsv";
  std::ofstream(train) << log(4000, true);
  std::ofstream(test) << log(1000, false);
  const JobConfig c =
      CtrConfig({"data.dataset=criteo_tsv", "data.train_file=" + train, "data.test_file=" + test,
                 "data.shuffle_buffer=512", "training.epochs=3", "training.batch_size=64"});
  Cluster cluster(c);
  LocalPsClient client(c, 0, cluster.ptrs());
  auto backend = MakeCpuBackend();
  auto train_stream = OpenExamples(c, true, 0);
  auto test_stream = OpenExamples(c, false, 0);
  REQUIRE(train_stream.ok());
  REQUIRE(test_stream.ok());
  Trainer trainer(c, 0, &client, backend.get(), *std::move(train_stream), *std::move(test_stream));
  auto result = trainer.Run();
  INFO(result.status().ToString());
  REQUIRE(result.ok());
  CHECK(result->steps == 3 * (4000 / 64));
  CHECK(result->data_lines_skipped == 1);
  REQUIRE(result->evaluated);
  // The best possible AUC here is 0.9; the base rate's is 0.5.
  CHECK(result->test_auc > 0.85);
  CHECK(result->test_logloss < result->base_logloss - 0.2);
  CHECK(result->bayes_logloss == 0);  // a file does not know its click probabilities
  CHECK(result->ToJson()["data_lines_skipped"] == 1);
}

}  // namespace
}  // namespace tessera
