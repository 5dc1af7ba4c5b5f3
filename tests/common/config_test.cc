// Job config: parsing, --set overrides and every validation error.
#include "common/config.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <string>

namespace tessera {
namespace {

const char* kMinimal = R"(
cluster:
  servers: ["127.0.0.1:5000", "127.0.0.1:5001"]
  workers: 3
)";

std::string ErrorOf(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  auto c = ParseJobConfig(yaml, sets);
  REQUIRE_FALSE(c.ok());
  CHECK(c.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(c.status().message());
}

TEST_CASE("a minimal config gets documented defaults") {
  auto c = ParseJobConfig(kMinimal, {});
  REQUIRE(c.ok());
  CHECK(c->num_servers() == 2);
  CHECK(c->cluster.workers == 3);
  CHECK(c->consistency.mode == ConsistencyMode::kBsp);
  CHECK(c->consistency.aggregate);
  CHECK(c->optimizer.type == OptimizerType::kSgd);
  CHECK(c->model.layers == std::vector<uint32_t>{784, 256, 128, 10});
}

TEST_CASE("every section parses") {
  auto c = ParseJobConfig(std::string(kMinimal) + R"(
consistency: {mode: ssp, staleness: 3, aggregate: false}
model:
  type: tables
  tables:
    - {name: w, kind: dense, size: 10, init: {type: uniform, low: -1, high: 1, seed: 9}}
    - {name: e, kind: sparse, dim: 4, reserve_rows: 1000000}
optimizer: {type: adam, lr: 0.002, beta1: 0.8, beta2: 0.99, epsilon: 1e-7}
server: {max_message_bytes: 1048576, max_pull_wait_ms: 500, reject_nonfinite: false}
worker: {pull_timeout_ms: 1000, channels_per_shard: 4, device: cpu}
training: {epochs: 3, batch_size: 32, seed: 5}
data: {dataset: synthetic, synthetic_train: 100}
logging: {level: debug}
)",
                          {});
  REQUIRE(c.ok());
  CHECK(c->consistency.mode == ConsistencyMode::kSsp);
  CHECK(c->consistency.staleness == 3);
  CHECK_FALSE(c->consistency.aggregate);
  REQUIRE(c->Tables().size() == 2);
  CHECK(c->Tables()[0].init.type == InitType::kUniform);
  CHECK(c->Tables()[0].init.seed == 9);
  CHECK(c->Tables()[1].kind == TableKind::kSparse);
  CHECK(c->Tables()[1].dim == 4);
  CHECK(c->Tables()[1].reserve_rows == 1000000);
  CHECK(c->Tables()[0].reserve_rows == 0);  // default: grow on demand
  CHECK(c->optimizer.beta1 == Approx(0.8));
  CHECK(c->optimizer.epsilon == Approx(1e-7));
  CHECK(c->server.max_pull_wait_ms == 500);
  CHECK_FALSE(c->server.reject_nonfinite);
  CHECK(c->worker.channels_per_shard == 4);
  CHECK(c->worker.shared_memory == SharedMemoryMode::kAuto);  // defaults
  CHECK(c->worker.spin_wait_us == -1);
  CHECK(c->training.batch_size == 32);
  CHECK(c->data.dataset == DatasetKind::kSynthetic);
  CHECK(c->logging.level == "debug");
}

TEST_CASE("--set overrides any key, lists included") {
  auto c = ParseJobConfig(
      kMinimal, {"consistency.mode=ssp", "consistency.staleness=3", "model.layers=[784, 64, 10]",
                 "cluster.servers.1=h:9", "optimizer.lr=0.5", "optimizer.lr_schedule=cosine",
                 "optimizer.decay_steps=5616", "optimizer.min_lr=0.01"});
  REQUIRE(c.ok());
  CHECK(c->optimizer.lr_schedule == LrSchedule::kCosine);
  CHECK(c->optimizer.decay_steps == 5616);
  CHECK(c->optimizer.min_lr == Approx(0.01));
  CHECK(c->consistency.mode == ConsistencyMode::kSsp);
  CHECK(c->consistency.staleness == 3);
  CHECK(c->model.layers == std::vector<uint32_t>{784, 64, 10});
  CHECK(c->cluster.servers[1] == "h:9");
  CHECK(c->optimizer.lr == Approx(0.5));
}

TEST_CASE("BSP forces staleness 0") {
  auto c = ParseJobConfig(kMinimal, {"consistency.staleness=4"});
  REQUIRE(c.ok());
  CHECK(c->consistency.staleness == 0);
}

TEST_CASE("mlp tables derive from layers with He init") {
  auto c = ParseJobConfig(kMinimal, {"model.layers=[4, 3, 2]"});
  REQUIRE(c.ok());
  auto t = c->Tables();
  REQUIRE(t.size() == 4);
  CHECK(t[0].name == "fc0.weight");
  CHECK(t[0].size == 12);
  CHECK(t[0].init.type == InitType::kNormal);
  CHECK(t[0].init.stddev == Approx(std::sqrt(2.0 / 4)));
  CHECK(t[1].name == "fc0.bias");
  CHECK(t[1].size == 3);
  CHECK(t[2].size == 6);
  CHECK(t[3].size == 2);
}

TEST_CASE("cnn tables: conv blocks, then the dense head on the pooled features") {
  auto c = ParseJobConfig(kMinimal, {"model.type=cnn", "model.conv_channels=[8, 16]",
                                     "model.kernel=3", "model.layers=[784, 32, 10]"});
  REQUIRE(c.ok());
  auto t = c->Tables();
  REQUIRE(t.size() == 8);
  CHECK(t[0].name == "conv0.weight");
  CHECK(t[0].size == 3 * 3 * 1 * 8);
  CHECK(t[0].init.stddev == Approx(std::sqrt(2.0 / 9)));
  CHECK(t[2].size == 3 * 3 * 8 * 16);
  CHECK(t[4].name == "fc0.weight");
  CHECK(t[4].size == 7 * 7 * 16 * 32);
  CHECK(ErrorOf(kMinimal, {"model.type=cnn", "model.layers=[780, 10]"}) ==
        "config: model.layers = [780, 10]: expected [pixels of a square image whose side "
        "divides by 4 (one 2x2 pool per conv block), head widths..., classes]");
  CHECK(ErrorOf(kMinimal, {"model.type=cnn", "model.kernel=4"}) ==
        "config: model.kernel = '4': expected an odd kernel side (same padding)");
}

TEST_CASE("validation errors name the key, the value and what was expected") {
  CHECK(ErrorOf(kMinimal, {"consistency.mode=bpp"}) ==
        "config: consistency.mode = 'bpp': expected one of bsp|ssp|asp");
  CHECK(ErrorOf(kMinimal, {"consistency.staleness=-1"}) ==
        "config: consistency.staleness = '-1': expected an integer >= 0 and <= 1000000");
  CHECK(ErrorOf(kMinimal, {"cluster.workers=0"}) ==
        "config: cluster.workers = '0': expected an integer >= 1 and <= 4096");
  CHECK(ErrorOf(kMinimal, {"optimizer.lr=0"}) ==
        "config: optimizer.lr = '0': expected a number > 0 and <= 1e+06");
  CHECK(ErrorOf(kMinimal, {"optimizer.lr=fast"}) ==
        "config: optimizer.lr = 'fast': expected a number > 0 and <= 1e+06");
  CHECK(ErrorOf(kMinimal, {"optimizer.lr_schedule=cosine"}) ==
        "config: optimizer.decay_steps = '0': expected an integer >= 1 when "
        "optimizer.lr_schedule is cosine");
  CHECK(ErrorOf(kMinimal, {"optimizer.lr_schedule=linear"}) ==
        "config: optimizer.lr_schedule = 'linear': expected one of constant|cosine");
  CHECK(ErrorOf(kMinimal, {"optimizer.lr=0.1", "optimizer.min_lr=0.2"}) ==
        "config: optimizer.min_lr = '0.2': expected a number >= 0 and <= 0.1");
  CHECK(ErrorOf(kMinimal, {"optimizer.type=rmsprop"}) ==
        "config: optimizer.type = 'rmsprop': expected one of sgd|momentum|adagrad|adam|ftrl");
  CHECK(ErrorOf(kMinimal, {"consistency.aggregate=maybe"}) ==
        "config: consistency.aggregate = 'maybe': expected true or false");
  CHECK(ErrorOf(kMinimal, {"worker.spin_wait_us=-5"}) ==
        "config: worker.spin_wait_us = '-5': expected an integer >= -1 and <= 1000000");
  CHECK(ErrorOf(kMinimal, {"worker.wire_precision=fp8"}) ==
        "config: worker.wire_precision = 'fp8': expected one of fp32|bf16");
  CHECK(ErrorOf(kMinimal, {"worker.shared_memory=on"}) ==
        "config: worker.shared_memory = 'on': expected one of auto|off");
  CHECK(ErrorOf(kMinimal, {"worker.device=gpu"}) ==
        "config: worker.device = 'gpu': expected one of auto|cpu|cuda");
  CHECK(ErrorOf(kMinimal, {"worker.gemm_precision=fp16"}) ==
        "config: worker.gemm_precision = 'fp16': expected one of fp32|tf32|bf16");
  CHECK(ErrorOf(kMinimal, {"worker.bsp_parts=17"}) ==
        "config: worker.bsp_parts = '17': expected an integer >= 1 and <= 16");
  CHECK(ErrorOf(kMinimal, {"worker.bsp_parts=4", "consistency.mode=ssp"}) ==
        "config: worker.bsp_parts = '4': expected 1 unless consistency.mode is bsp with "
        "consistency.aggregate (parts are applied as every worker's push of them is in)");
  CHECK(ErrorOf(kMinimal, {"worker.bsp_parts=4", "cluster.standbys=[h:1,h:2]"}) ==
        "config: worker.bsp_parts = '4': expected 1 with cluster.standbys (a standby "
        "follows whole clocks)");
  CHECK(ParseJobConfig(kMinimal, {"worker.bsp_parts=4"})->worker.bsp_parts == 4);
  CHECK(ErrorOf(kMinimal, {"logging.level=loud"}) ==
        "config: logging.level = 'loud': expected one of trace|debug|info|warn|error|off");
  CHECK(ErrorOf(kMinimal, {"cluster.servers.0=nohost"}) ==
        "config: cluster.servers.0 = 'nohost': expected host:port with a port in 1..65535");
  CHECK(ErrorOf(kMinimal, {"model.type=softmax", "model.layers=[784, 100, 10]"}) ==
        "config: model.layers = [784, 100, 10]: expected [inputs, classes] for a softmax model");
  CHECK(ErrorOf(kMinimal, {"checkpoint.dir=/tmp/c", "checkpoint.disabled=true"}) ==
        "config: checkpoint.dir = '/tmp/c': expected no folder when checkpoint.disabled is true");
  CHECK(ErrorOf(kMinimal, {"model.type=ctr", "model.layers=[8]", "data.dataset=criteo_tsv",
                           "data.test_file=t.tsv"}) ==
        "config: data.train_file = (missing): expected a click-log file (data.dataset criteo_tsv)");
  CHECK(ErrorOf(kMinimal, {"model.type=ctr", "model.layers=[8]", "data.dataset=criteo_tsv",
                           "data.train_file=a.tsv", "data.shuffle_buffer=0"}) ==
        "config: data.shuffle_buffer = '0': expected an integer >= 1 and <= 16777216");
  CHECK(ErrorOf(kMinimal, {"data.dataset=criteo_tsv"}) ==
        "config: data.dataset = 'criteo_tsv': expected a classification data set for model.type "
        "mlp (synthetic_ctr and criteo_tsv feed model.type ctr)");
  CHECK(ErrorOf(kMinimal, {"server.max_message_bytes=10"})
            .find("server.max_message_bytes = '10': expected an integer >= 1024") !=
        std::string::npos);
}

TEST_CASE("optimizer.freeze_variance_after is Adam's alone") {
  CHECK(ErrorOf(kMinimal, {"optimizer.type=sgd", "optimizer.freeze_variance_after=100"}) ==
        "config: optimizer.freeze_variance_after = '100': expected 0 unless optimizer.type is adam");
  CHECK(ErrorOf(kMinimal, {"optimizer.type=adam", "optimizer.freeze_variance_after=-1"})
            .find("config: optimizer.freeze_variance_after = '-1'") == 0);
}

TEST_CASE("unknown keys are errors, not ignored") {
  CHECK(ErrorOf(kMinimal, {"optimizer.learning_rate=0.1"}) ==
        "config: optimizer.learning_rate: unknown key; expected one of alpha|beta|beta1|beta2|"
        "dc_decay|dc_lambda|decay_steps|epsilon|freeze_variance_after|gap_decay|initial_accumulator|l1|"
        "l2|lazy|lr|lr_schedule|"
        "min_lr|momentum|nesterov|staleness_compensation|tables|type");
  CHECK(ErrorOf(std::string(kMinimal) + "trainning: {epochs: 1}\n")
            .find("config: trainning: unknown key") == 0);
}

TEST_CASE("table lists are checked") {
  std::string base = std::string(kMinimal) + "model:\n  type: tables\n  tables:\n";
  CHECK(ErrorOf(base + "    - {name: w, kind: dense}\n") ==
        "config: model.tables.0.size = (missing): expected an integer >= 1 for a dense table");
  CHECK(ErrorOf(base + "    - {name: w, kind: dense, size: 2}\n    - {name: w, kind: sparse}\n") ==
        "config: model.tables.1.name = 'w': expected a name not used by another table");
  CHECK(ErrorOf(base + "    - {name: w, kind: blob, size: 2}\n") ==
        "config: model.tables.0.kind = 'blob': expected one of dense|sparse");
  CHECK(ErrorOf(base + "    - {name: w, size: 2, init: {type: uniform, low: 1, high: 0}}\n") ==
        "config: model.tables.0.init.high = '0': expected >= low (1)");
  CHECK(ErrorOf(base + "    - {name: w, size: 2, reserve_rows: 10}\n") ==
        "config: model.tables.0.reserve_rows = '10': expected 0: reserve_rows is for sparse "
        "tables (a dense one is allocated whole)");
  CHECK(ErrorOf(base + "    - {name: e, kind: sparse, reserve_rows: -1}\n") ==
        "config: model.tables.0.reserve_rows = '-1': expected an integer >= 0 and <= 68719476736");
}

TEST_CASE("server addresses from a DNS pattern") {
  const char* yaml = R"(
cluster:
  server_pattern: "tessera-server-{i}.tessera-server.{namespace}.svc:50051"
  num_servers: 3
  workers: 2
)";
  setenv("POD_NAMESPACE", "ml", 1);
  auto c = ParseJobConfig(yaml, {});
  REQUIRE(c.ok());
  CHECK(c->cluster.servers ==
        std::vector<std::string>{"tessera-server-0.tessera-server.ml.svc:50051",
                                 "tessera-server-1.tessera-server.ml.svc:50051",
                                 "tessera-server-2.tessera-server.ml.svc:50051"});
  auto explicit_ns = ParseJobConfig(yaml, {"cluster.namespace=prod"});
  CHECK(explicit_ns->cluster.servers[0] == "tessera-server-0.tessera-server.prod.svc:50051");
  unsetenv("POD_NAMESPACE");
  CHECK(ParseJobConfig(yaml, {})->cluster.servers[1] ==
        "tessera-server-1.tessera-server.default.svc:50051");
  CHECK(ErrorOf(yaml, {"cluster.server_pattern=host:1"}) ==
        "config: cluster.server_pattern = 'host:1': expected host:port holding {i}, e.g. "
        "tessera-server-{i}.tessera-server.{namespace}.svc:50051");
  CHECK(ErrorOf(yaml, {"cluster.servers=[a:1]"}) ==
        "config: cluster.server_pattern = 'tessera-server-{i}.tessera-server.{namespace}.svc:50051'"
        ": expected either cluster.servers or cluster.server_pattern, not both");
}

TEST_CASE("standby addresses from a DNS pattern, one per shard") {
  const char* yaml = R"(
cluster:
  server_pattern: "tessera-server-{i}.tessera-server.{namespace}.svc:50051"
  standby_pattern: "tessera-standby-{i}.tessera-standby.{namespace}.svc:50051"
  etcd: "tessera-etcd-client:2379"
  num_servers: 2
  workers: 2
)";
  auto c = ParseJobConfig(yaml, {"cluster.namespace=ml"});
  REQUIRE(c.ok());
  CHECK(c->cluster.standbys ==
        std::vector<std::string>{"tessera-standby-0.tessera-standby.ml.svc:50051",
                                 "tessera-standby-1.tessera-standby.ml.svc:50051"});
  CHECK(c->cluster.etcd == "tessera-etcd-client:2379");
  CHECK(ErrorOf(yaml, {"cluster.standby_pattern=standby:1"}) ==
        "config: cluster.standby_pattern = 'standby:1': expected host:port holding {i}, e.g. "
        "tessera-server-{i}.tessera-server.{namespace}.svc:50051");
  CHECK(ErrorOf(yaml, {"cluster.standbys=[a:1,b:2]"}) ==
        "config: cluster.standby_pattern = "
        "'tessera-standby-{i}.tessera-standby.{namespace}.svc:50051'"
        ": expected either cluster.standbys or cluster.standby_pattern, not both");
}

TEST_CASE("hostile configs: duplicate keys, ports out of range, security keys") {
  // YAML forbids a key twice; yaml-cpp would silently keep the first.
  CHECK(ErrorOf(std::string(kMinimal) + "training: {epochs: 1}\ntraining: {epochs: 9}\n") ==
        "config: training: given twice; expected each key once");
  CHECK(ErrorOf(std::string(kMinimal) + "optimizer: {lr: 0.1, lr: 0.2}\n") ==
        "config: optimizer.lr: given twice; expected each key once");
  CHECK(ErrorOf(kMinimal, {"cluster.servers=[\"h:99999\"]"}) ==
        "config: cluster.servers.0 = 'h:99999': expected host:port with a port in 1..65535");
  CHECK(ErrorOf(kMinimal, {"cluster.servers=[\"h:0\"]"}) ==
        "config: cluster.servers.0 = 'h:0': expected host:port with a port in 1..65535");
  CHECK(ErrorOf(kMinimal, {"cluster.servers=[\"h:-1\"]"}) ==
        "config: cluster.servers.0 = 'h:-1': expected host:port with a port in 1..65535");
  CHECK(CheckHostPort("--listen", "127.0.0.1").message() ==
        "--listen = '127.0.0.1': expected host:port with a port in 1..65535");
  CHECK(CheckHostPort("--listen", "127.0.0.1:0", /*allow_zero=*/true).ok());
  CHECK(CheckHostPort("--listen", "[::1]:65535").ok());
  CHECK(ErrorOf(kMinimal, {"security.tls.cert_file=a.pem"}) ==
        "config: security.tls.key_file = (missing): expected both security.tls.cert_file and "
        "key_file, or neither");
  CHECK(ErrorOf(kMinimal, {"security.tls.cert_file=a.pem", "security.tls.key_file=k.pem"}) ==
        "config: security.tls.ca_file = (missing): expected the CA that signed the shards' "
        "certificates (workers check them with it)");
  CHECK(ErrorOf(kMinimal, {"security.tls.ca_file=ca.pem", "security.tls.mutual=true"}) ==
        "config: security.tls.mutual = 'true': expected false unless security.tls.cert_file and "
        "key_file are set");
  CHECK(ErrorOf(kMinimal, {"security.rank_lease_s=-1"}) ==
        "config: security.rank_lease_s = '-1': expected never, or a number >= 0 and <= 1e+06");
  CHECK(ErrorOf(kMinimal, {"server.max_gradient_abs=-5"}).find("server.max_gradient_abs") !=
        std::string::npos);
  auto ok = ParseJobConfig(kMinimal, {"security.token_file=/run/token", "server.max_sparse_rows=10",
                                      "server.pull_creates_rows=false"});
  REQUIRE(ok.ok());
  CHECK(ok->security.token_file == "/run/token");
  CHECK(ok->server.max_sparse_rows == 10);
  CHECK_FALSE(ok->server.pull_creates_rows);
  // A rank never passes to another process unless the job says so.
  CHECK(std::isinf(ok->security.rank_lease_s));
  CHECK(ParseJobConfig(kMinimal, {"security.rank_lease_s=30"})->security.rank_lease_s == 30);
  CHECK(std::isinf(ParseJobConfig(kMinimal, {"security.rank_lease_s=never"})->security.rank_lease_s));
}

TEST_CASE("inputs the config fuzzer found") {
  // An override applied to a document that is a scalar, not a mapping.
  CHECK(ErrorOf("just words", {"x=1"}).find("expected a mapping of sections") != std::string::npos);
  CHECK(ErrorOf("[1, 2]", {}).find("expected a mapping of sections") != std::string::npos);
}

TEST_CASE("missing servers, bad YAML, bad --set and missing files") {
  CHECK(ErrorOf("cluster: {workers: 2}\n") ==
        "config: cluster.servers is missing: expected a non-empty list of host:port addresses "
        "(or cluster.server_pattern with cluster.num_servers)");
  CHECK(ErrorOf("cluster: [unclosed\n").find("config: not valid YAML") == 0);
  CHECK(ErrorOf(kMinimal, {"no-equals-sign"}) == "--set 'no-equals-sign': expected key.path=value");
  CHECK(ErrorOf(kMinimal, {"cluster.workers.x=1"}) ==
        "--set cluster.workers.x: 'workers' is not a mapping key here");
  auto missing = LoadJobConfig("/nonexistent/job.yaml", {});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("staleness compensation: read, checked against BSP's aggregation") {
  auto c = ParseJobConfig(kMinimal, {"consistency.mode=ssp", "optimizer.staleness_compensation=dc",
                                     "optimizer.dc_lambda=0.5"});
  REQUIRE(c.ok());
  CHECK(c->optimizer.staleness_compensation == StalenessCompensation::kDc);
  CHECK(c->optimizer.dc_lambda == 0.5f);
  CHECK(ParseJobConfig(kMinimal, {})->optimizer.dc_lambda == 100.0f);
  CHECK(c->optimizer.dc_decay == 0.95f);
  CHECK(ErrorOf(kMinimal, {"optimizer.staleness_compensation=dcc"}) ==
        "config: optimizer.staleness_compensation = 'dcc': expected one of none|dc|lr_scale|gap_aware");
  CHECK(ErrorOf(kMinimal, {"optimizer.staleness_compensation=lr_scale"}) ==
        "config: optimizer.staleness_compensation = 'lr_scale': expected none under "
        "consistency.mode bsp with consistency.aggregate (every gradient is applied to the "
        "values it was computed from); use ssp, asp, or aggregate: false");
  CHECK(ParseJobConfig(kMinimal,
                       {"consistency.aggregate=false", "optimizer.staleness_compensation=lr_scale"})
            .ok());
}

TEST_CASE("training.balance: static by default, dynamic for the dense models only") {
  auto c = ParseJobConfig(kMinimal, {});
  REQUIRE(c.ok());
  CHECK(c->training.balance == Balance::kStatic);
  c = ParseJobConfig(kMinimal, {"training.balance=dynamic"});
  REQUIRE(c.ok());
  CHECK(c->training.balance == Balance::kDynamic);
  CHECK(ErrorOf(kMinimal, {"training.balance=fair"}) ==
        "config: training.balance = 'fair': expected one of static|dynamic");
  CHECK(ErrorOf(kMinimal, {"training.balance=dynamic", "model.type=ctr", "model.layers=[8]",
                           "data.dataset=synthetic_ctr"}) ==
        "config: training.balance = 'dynamic': expected static for model.type ctr (dynamic "
        "balancing shares the steps of the dense models: softmax, mlp, cnn)");
  CHECK(c->training.balance_calibration_steps == 10);
  c = ParseJobConfig(kMinimal, {"training.balance=dynamic", "training.balance_calibration_steps=0"});
  REQUIRE(c.ok());
  CHECK(c->training.balance_calibration_steps == 0);
  CHECK(ErrorOf(kMinimal, {"training.slow_probability=1.5"}) ==
        "config: training.slow_probability = '1.5': expected a number >= 0 and <= 1");
  CHECK(ErrorOf(kMinimal, {"training.balance_calibration_steps=-1"}) ==
        "config: training.balance_calibration_steps = '-1': expected an integer >= 0 and <= "
        "1000000");
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

TEST_CASE("worker.compression and emulation: read, per table, and refused with a line") {
  auto c = ParseJobConfig(kMinimal, {"worker.compression.push=topk", "worker.compression.pull=fp16",
                                     "worker.compression.topk_ratio=0.02",
                                     "worker.compression.tables={b: {push: none}}",
                                     "emulation.link_rate=100mbit"});
  REQUIRE(c.ok());
  CHECK(c->worker.compression.For("w").push == CodecKind::kTopk);
  CHECK(c->worker.compression.For("w").pull == CodecKind::kFp16);
  CHECK(c->worker.compression.For("b").push == CodecKind::kNone);
  CHECK(c->worker.compression.For("b").pull == CodecKind::kFp16);  // from the job's
  CHECK(c->worker.compression.topk_ratio == 0.02);
  CHECK(c->emulation.link_rate_bps == 100'000'000);
  // The old shorthand still works.
  auto old = ParseJobConfig(kMinimal, {"worker.wire_precision=bf16"});
  REQUIRE(old.ok());
  CHECK(old->worker.compression.all.push == CodecKind::kBf16);
  CHECK(old->worker.compression.all.pull == CodecKind::kBf16);
  CHECK(ErrorOf(kMinimal, {"worker.compression.push=zip"}) ==
        "config: worker.compression.push = 'zip': expected one of none|bf16|fp16|topk|onebit");
  CHECK(ErrorOf(kMinimal, {"worker.compression.pull=onebit"}) ==
        "config: worker.compression.pull = 'onebit': expected one of none|bf16|fp16|topk");
  CHECK(ErrorOf(kMinimal, {"worker.compression.topk_values=onebit"}) ==
        "config: worker.compression.topk_values = 'onebit': expected one of none|bf16|fp16");
  CHECK(ParseJobConfig(kMinimal, {"worker.compression.topk_values=bf16"})
            ->worker.compression.topk_values == CodecKind::kBf16);
  CHECK(ErrorOf(kMinimal, {"worker.compression.topk_ratio=0"}) ==
        "config: worker.compression.topk_ratio = '0': expected a number > 0 and <= 1");
  CHECK(ErrorOf(kMinimal, {"emulation.link_rate=fast"}) ==
        "config: emulation.link_rate = 'fast': expected a rate from 8kbit to 400gbit, as tc "
        "writes it: 100mbit, 1gbit, 10gbit (or unshaped, or none)");
  auto unshaped = ParseJobConfig(kMinimal, {"emulation.link_rate=unshaped"});
  REQUIRE(unshaped.ok());
  CHECK(unshaped->emulation.enabled());
  CHECK(unshaped->emulation.link_rate_bps == 0);
  CHECK(ErrorOf(kMinimal, {"emulation.link_delay_ms=5"}) ==
        "config: emulation.link_delay_ms = '5': expected 0 unless emulation.link_rate is set");
  auto gbit = ParseJobConfig(kMinimal, {"emulation.link_rate=2.5gbit"});
  REQUIRE(gbit.ok());
  CHECK(gbit->emulation.link_rate_bps == 2'500'000'000);
}

TEST_CASE("cluster.standbys: one per shard, in every mode") {
  auto c = ParseJobConfig(kMinimal, {"cluster.standbys=[\"h:1\", \"h:2\"]",
                                     "server.replication_timeout_s=2.5"});
  REQUIRE(c.ok());
  CHECK(c->cluster.standbys == std::vector<std::string>{"h:1", "h:2"});
  CHECK(c->server.replication_timeout_s == 2.5);
  CHECK(c->server.replication_queue_bytes == int64_t{256} << 20);
  CHECK(ErrorOf(kMinimal, {"server.replication_queue_bytes=1000"}).find(
            "server.replication_queue_bytes") != std::string::npos);
  CHECK(ParseJobConfig(kMinimal, {})->cluster.standbys.empty());
  CHECK(ErrorOf(kMinimal, {"cluster.standbys=[\"h:1\"]"}) ==
        "config: cluster.standbys lists 1 addresses: expected one per shard (2)");
  CHECK(ErrorOf(kMinimal, {"cluster.standbys=[\"h:1\", \"nohost\"]"}) ==
        "config: cluster.standbys.1 = 'nohost': expected host:port with a port in 1..65535");
  // Every mode is replicated.
  CHECK(ParseJobConfig(kMinimal, {"cluster.standbys=[\"h:1\", \"h:2\"]", "consistency.mode=ssp"})
            .ok());
  CHECK(ParseJobConfig(kMinimal, {"cluster.standbys=[\"h:1\", \"h:2\"]", "consistency.mode=asp"})
            .ok());
  CHECK(ParseJobConfig(kMinimal,
                       {"cluster.standbys=[\"h:1\", \"h:2\"]", "consistency.aggregate=false"})
            .ok());
  CHECK(ErrorOf(kMinimal, {"server.replication_timeout_s=0"}).find(
            "server.replication_timeout_s") != std::string::npos);
}

TEST_CASE("cluster.etcd: host:port, with a standby per shard; server.lease_ttl_s in 1..60") {
  auto c = ParseJobConfig(kMinimal, {"cluster.standbys=[\"h:1\", \"h:2\"]",
                                     "cluster.etcd=etcd:2379", "server.lease_ttl_s=1"});
  REQUIRE(c.ok());
  CHECK(c->cluster.etcd == "etcd:2379");
  CHECK(c->server.lease_ttl_s == 1);
  CHECK(ParseJobConfig(kMinimal, {})->server.lease_ttl_s == 2);
  CHECK(ErrorOf(kMinimal, {"cluster.standbys=[\"h:1\", \"h:2\"]", "cluster.etcd=etcd"}) ==
        "config: cluster.etcd = 'etcd': expected host:port of etcd's clients");
  CHECK(ErrorOf(kMinimal, {"cluster.etcd=etcd:2379"}) ==
        "config: cluster.etcd = 'etcd:2379' without cluster.standbys: expected a standby per "
        "shard to fail over to");
  CHECK(ErrorOf(kMinimal, {"server.lease_ttl_s=0"}).find("server.lease_ttl_s") !=
        std::string::npos);
}

}  // namespace
}  // namespace tessera
