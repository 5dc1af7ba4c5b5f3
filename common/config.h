// The job configuration: one YAML file describes a whole job and every daemon
// reads the same file. Any key may be overridden with `--set a.b=value`
// (value parsed as YAML, so `--set model.layers=[784,64,10]` works).
//
//   auto config = LoadJobConfig("configs/fashion_mnist_mlp.yaml",
//                               {"consistency.mode=ssp", "consistency.staleness=3"});
//
// Validation happens here, once, at start-up: an unknown key, a value of the
// wrong type or outside its range fails with one line naming the key, the
// value and what was expected, e.g.
//   config: consistency.mode = 'bpp': expected one of bsp|ssp|asp
// Structs are plain values; safe to copy and share read-only across threads.
#ifndef TESSERA_COMMON_CONFIG_H_
#define TESSERA_COMMON_CONFIG_H_

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

// Largest cluster.num_servers / cluster.workers a config accepts.
inline constexpr uint32_t kMaxShards = 4096;
inline constexpr uint32_t kMaxWorkers = 4096;

// Every choice a config makes among fixed words is an enum, parsed once here;
// no component compares strings. NameOf(value) gives the config's word back
// (for logs, messages and summary.json).
enum class ConsistencyMode { kBsp, kSsp, kAsp };
enum class TableKind { kDense, kSparse };
enum class ModelType { kSoftmax, kMlp, kCnn, kCtr, kTables };
enum class InitType { kZeros, kConstant, kUniform, kNormal };
enum class OptimizerType { kSgd, kMomentum, kAdagrad, kAdam, kFtrl };
enum class LrSchedule { kConstant, kCosine };
enum class DeviceChoice { kAuto, kCpu, kCuda };
enum class WirePrecision { kFp32, kBf16 };
// How a table's values travel in one direction (common/codec.h).
enum class CodecKind { kNone, kBf16, kFp16, kTopk, kOnebit };
enum class SharedMemoryMode { kAuto, kOff };
enum class GemmPrecision { kFp32, kTf32, kBf16 };
enum class DatasetKind { kFashionMnist, kSynthetic, kSyntheticCtr, kCriteoTsv };
enum class RestorePolicy { kAuto, kNever, kRequired };
enum class StalenessCompensation { kNone, kDc, kLrScale, kGapAware };
enum class Balance { kStatic, kDynamic };
enum class Refresh { kLazy, kEager };

// The words of each enum, in declaration order.
template <typename E>
struct EnumWords;
#define TESSERA_ENUM_WORDS(E, ...)                         \
  template <>                                              \
  struct EnumWords<E> {                                    \
    static constexpr const char* kWords[] = {__VA_ARGS__}; \
  }
TESSERA_ENUM_WORDS(ConsistencyMode, "bsp", "ssp", "asp");
TESSERA_ENUM_WORDS(TableKind, "dense", "sparse");
TESSERA_ENUM_WORDS(ModelType, "softmax", "mlp", "cnn", "ctr", "tables");
TESSERA_ENUM_WORDS(InitType, "zeros", "constant", "uniform", "normal");
TESSERA_ENUM_WORDS(OptimizerType, "sgd", "momentum", "adagrad", "adam", "ftrl");
TESSERA_ENUM_WORDS(LrSchedule, "constant", "cosine");
TESSERA_ENUM_WORDS(DeviceChoice, "auto", "cpu", "cuda");
TESSERA_ENUM_WORDS(WirePrecision, "fp32", "bf16");
TESSERA_ENUM_WORDS(CodecKind, "none", "bf16", "fp16", "topk", "onebit");
TESSERA_ENUM_WORDS(SharedMemoryMode, "auto", "off");
TESSERA_ENUM_WORDS(GemmPrecision, "fp32", "tf32", "bf16");
TESSERA_ENUM_WORDS(DatasetKind, "fashion_mnist", "synthetic", "synthetic_ctr", "criteo_tsv");
TESSERA_ENUM_WORDS(RestorePolicy, "auto", "never", "required");
TESSERA_ENUM_WORDS(StalenessCompensation, "none", "dc", "lr_scale", "gap_aware");
TESSERA_ENUM_WORDS(Balance, "static", "dynamic");
TESSERA_ENUM_WORDS(Refresh, "lazy", "eager");
#undef TESSERA_ENUM_WORDS

template <typename E>
const char* NameOf(E value) {
  return EnumWords<E>::kWords[static_cast<size_t>(value)];
}
inline const char* ModeName(ConsistencyMode mode) { return NameOf(mode); }

// How a table's values (dense) or a new row's values (sparse) start.
// Values are a pure function of (seed, table name, index), so they do not
// depend on how many shards the table is split over.
struct InitConfig {
  InitType type = InitType::kZeros;
  float value = 0.0f;  // constant
  float low = -0.05f;  // uniform
  float high = 0.05f;
  float mean = 0.0f;  // normal
  float stddev = 0.01f;
  uint64_t seed = 1;
};

struct TableConfig {
  std::string name;
  TableKind kind = TableKind::kDense;
  uint64_t size = 0;  // dense: number of floats
  uint32_t dim = 1;   // sparse: floats per row
  // sparse: rows to reserve memory for at start-up, all shards together (each
  // reserves its share, faulted in before it serves). 0: grow on demand only.
  // Not a limit: the table grows past it.
  uint64_t reserve_rows = 0;
  InitConfig init;
};

struct ClusterConfig {
  // host:port of shard 0..S-1. Either listed, or generated from
  // server_pattern for num_servers shards: "{i}" becomes the shard index and
  // "{namespace}" the namespace (e.g. a StatefulSet's stable DNS names,
  // "tessera-server-{i}.tessera-server.{namespace}.svc:50051").
  std::vector<std::string> servers;
  std::string server_pattern;
  uint32_t num_servers = 0;
  // For {namespace}: this key, else $POD_NAMESPACE, else "default".
  std::string namespace_name;
  uint32_t workers = 1;
  // host:port of each shard's standby (docs/DESIGN.md "Replication"), in
  // shard order; empty: none. A shard sends every change to its standby
  // (a tessera-server started with --standby) and answers the call that
  // made it only once the standby has it. Every consistency mode.
  // Either listed, or generated from standby_pattern for num_servers shards
  // as server_pattern is.
  std::vector<std::string> standbys;
  std::string standby_pattern;
  // host:port of etcd's client endpoint (docs/DESIGN.md "Failover"); needs
  // standbys. Each shard's primary holds a term there, renewed every
  // server.lease_ttl_s / 3, and a standby that holds every change the
  // primary acknowledged takes over when the term ends. Empty: no failover
  // (a lost primary is restarted from its checkpoints, as without standbys).
  std::string etcd;
};

struct ConsistencyConfig {
  ConsistencyMode mode = ConsistencyMode::kBsp;
  uint32_t staleness = 0;  // SSP bound s; forced to 0 under BSP
  // BSP only: sum the W gradients of a clock and apply the optimizer once on
  // their mean, so W workers of batch b train like one process of batch W*b.
  bool aggregate = true;
  // SSP: when a worker refreshes its copy of the parameters. lazy: only when
  // the bound forces it (a copy serves up to s + 1 clocks, so a worker's
  // gradients come from values that miss up to s of its own updates);
  // eager: every push asks for the next clock's values in its round trip
  // (as BSP and ASP always do), so a worker computes on the freshest values
  // the shards have and waits only when the bound says so. Eager moves the
  // dense values every clock; it trains better and, here, faster
  // (docs/STALENESS.md measures both).
  Refresh refresh = Refresh::kEager;
  // BSP/SSP: a worker silent (no call to the shard) this long is dropped from
  // the barrier so the others go on; it rejoins when it registers again.
  // 0: never (the others wait for it, which is the barrier's contract).
  double evict_after_s = 0;
};

struct ModelConfig {
  // softmax | mlp | cnn: tables derived from `layers` (and conv_channels);
  // tables: the `tables` list.
  ModelType type = ModelType::kMlp;
  // mlp/softmax: widths, inputs first, classes last. cnn: the square
  // one-channel image's pixel count first, then the dense head's widths.
  std::vector<uint32_t> layers = {784, 256, 128, 10};
  // cnn: output channels of each conv(kernel x kernel, same padding) + ReLU +
  // 2x2 max-pool block.
  std::vector<uint32_t> conv_channels = {32, 64};
  uint32_t kernel = 5;
  uint64_t seed = 1;
  std::vector<TableConfig> tables;  // type: tables
  // ctr (click-through rate; worker/ctr_model.h): `fields` categorical ids
  // per example, each in [0, vocab), looked up as key (field << 40) | id in
  // the sparse tables "embedding" (embedding_dim floats a row) and "wide"
  // (1 float a row); `dense_features` floats per example beside them.
  // `layers` are the hidden widths of the MLP over [dense, embeddings]; it
  // ends in 2 logits (click, no click).
  uint32_t fields = 26;
  uint64_t vocab = 1'000'000;
  uint32_t embedding_dim = 16;
  uint32_t dense_features = 13;
};

// Sparse keys of a ctr model: the field in the top 24 bits, the id below.
inline constexpr int kCtrFieldShift = 40;
inline uint64_t CtrKey(uint32_t field, uint64_t id) {
  return (uint64_t{field} << kCtrFieldShift) | id;
}

struct OptimizerConfig {
  OptimizerType type = OptimizerType::kSgd;
  float lr = 0.01f;
  float momentum = 0.9f;             // momentum
  bool nesterov = false;             // momentum
  float beta1 = 0.9f;                // adam
  float beta2 = 0.999f;              // adam
  float epsilon = 1e-8f;             // adam, adagrad
  // adam: a value whose gradient is exactly 0 in an update keeps its
  // moments and its value (LazyAdam, PyTorch's SparseAdam on dense tables):
  // with top-k pushes, the positions no worker sent that clock. Off: every
  // value's moments decay each update and it moves by m / sqrt(v).
  bool lazy = false;
  // adam: after this many updates of a value's chunk, its second moment v
  // (and v's bias correction) stays as it is, and Adam goes on as momentum
  // preconditioned by the frozen v (1-bit Adam, Tang et al. 2021: the
  // variance is what sign-compressed gradients distort; warm up
  // uncompressed with worker.compression.warmup_steps, then freeze). 0: never.
  int64_t freeze_variance_after = 0;
  float initial_accumulator = 0.1f;  // adagrad
  // ftrl (FTRL-proximal, McMahan et al. 2013), per value: learning rate
  // alpha / (beta + sqrt(sum of g^2)), L1 and L2 regularization. Its values
  // follow from its state: the first update replaces a table's initial
  // values, so it is meant for tables that start at zero (a ctr model's "wide").
  // lr and the schedule do not apply to it.
  float alpha = 0.05f;
  float beta = 1.0f;
  float l1 = 0.0f;
  float l2 = 0.0f;
  // Learning rate over the updates a table has seen: constant, or cosine from
  // lr down to min_lr over decay_steps updates (then min_lr). An update is one
  // clock under BSP (the W pushes are applied once) and one push otherwise.
  LrSchedule lr_schedule = LrSchedule::kConstant;
  int64_t decay_steps = 0;  // cosine: >= 1
  float min_lr = 0.0f;      // cosine: <= lr
  // How a shard treats a push computed from values that other updates have
  // since changed (its staleness tau, docs/DESIGN.md "Staleness"), on dense
  // tables (sparse rows are applied as they come):
  //   none      applied as it is;
  //   dc        delay compensation (DC-ASGD, Zheng et al., ICML 2017, the
  //             adaptive variant): g + lambda * g * g * (w_now - w_read),
  //             lambda = dc_lambda / sqrt(mean square of g + 1e-7), the mean
  //             square a running average with decay dc_decay, per value
  //             (corrected for its zero start, as Adam's second moment);
  //   lr_scale  the staleness-aware rate (Zhang et al., IJCAI 2016): the
  //             update's learning rate divided by max(1, tau). FTRL, which
  //             has no single rate, ignores it.
  //   gap_aware Gap-Aware (Barkai et al., ICLR 2020), applied to the step:
  //             the optimizer runs on g as it came (its moments see every
  //             gradient whole), and each value's step is then divided by
  //             its gap, max(1, |w_now - w_read| / (that value's mean step)),
  //             the mean step a running average of the value's undamped
  //             |step| with decay gap_decay (corrected for its zero start).
  //             A value the other pushes did not move goes at the full
  //             rate; one they moved by k typical steps, at 1/k of it. Not
  //             with ftrl (its values are recomputed from its slots).
  // Not with BSP's aggregation (every gradient is applied to the values it
  // was computed from).
  StalenessCompensation staleness_compensation = StalenessCompensation::kNone;
  // dc's lambda0. The correction is about lambda0 * (the values' drift since
  // the read) relative to g, so it scales with the step size: the paper's 2
  // suits SGD's large steps; under Adam at lr 1e-3 a weight drifts ~0.007
  // over 7 updates and 2 changes nothing, 100 is the best measured
  // (docs/STALENESS.md).
  float dc_lambda = 100.0f;
  float dc_decay = 0.95f;
  float gap_decay = 0.95f;
};

struct ServerConfig {
  // Larger requests fail RESOURCE_EXHAUSTED; larger responses are not sent.
  // Workers split pushes into pieces of at most 1 MiB, so requests stay
  // small; this bounds pull answers and what one request may hold.
  int64_t max_message_bytes = 512 << 20;
  int threads = 0;  // gRPC callback threads; 0 lets gRPC choose
  // Memory gRPC's transport may hold for this shard's connections (request
  // bodies being read, replies being sent); past it the transport sheds the
  // streams that hold the most. 0 (auto): 32 MiB plus twice the largest pull
  // of this shard's dense tables. -1: no bound.
  int64_t transport_memory_bytes = 0;
  // A pull parked on the clock longer than this fails DEADLINE_EXCEEDED even
  // when its caller's deadline is later; bounds every server-side wait.
  int64_t max_pull_wait_ms = 120'000;
  // A push whose gradients hold NaN/Inf, or whose update would make a value
  // or optimizer state non-finite, fails INVALID_ARGUMENT and changes nothing.
  bool reject_nonfinite = true;
  // A push with any |gradient| above this fails INVALID_ARGUMENT; 0: no
  // bound. The default is far above what an honest job sends (a mean loss's
  // gradients are O(1); docs/RELIABILITY.md) and far below what freezes Adam
  // (1e15 and up) or overflows a value.
  double max_gradient_abs = 1e6;
  // A push whose update would leave a parameter value larger than this in
  // magnitude fails INVALID_ARGUMENT and changes nothing (checked on the
  // result where one update could move a value by 1 or more); 0: no bound.
  double max_parameter_abs = 1e6;
  // Rows one sparse table may hold on this shard; a push or pull that would
  // create more fails RESOURCE_EXHAUSTED. 0: derived from the machine (the
  // sparse tables share half of its memory; at least each table's reserve),
  // logged at start-up.
  uint64_t max_sparse_rows = 0;
  // Whether a pull of keys never pushed creates their rows (true), or answers
  // their initial values without keeping them (false: a pull cannot grow a table).
  bool pull_creates_rows = true;
  bool exit_when_workers_done = true;  // exit 0 once every worker called Finish
  // Replication (cluster.standbys): how long a shard retries a change its
  // standby does not acknowledge before it goes on without that standby
  // (logged as an error; the standby must then start again).
  double replication_timeout_s = 10;
  // Replication: the changes a primary queues for a standby that joined and
  // is catching up, at most; past that the joiner is cut (it joins again
  // with a fresh copy). Bounds the primary's memory beyond its tables.
  int64_t replication_queue_bytes = int64_t{256} << 20;
  // Failover (cluster.etcd): the lease of a primary's term, in seconds. A
  // killed primary's standby takes over after at most this long. 1 needs an
  // etcd whose election timeout is at most 666 ms (etcd grants at least 1.5
  // election timeouts).
  int64_t lease_ttl_s = 2;
  // A second, plaintext port that serves only the gRPC health service, for
  // probes that cannot speak TLS (Kubernetes' grpc probes). 0: none (the
  // health service answers on the main port, without a token, as always).
  uint32_t health_port = 0;
  // GET /metrics (Prometheus text format, plain HTTP) on this port, on the
  // host the shard listens on. 0: none.
  uint32_t metrics_port = 0;
  uint32_t sparse_stripes = 64;  // lock stripes per sparse table
};

// The codecs of one table, per direction.
struct CodecChoice {
  CodecKind push = CodecKind::kNone;
  CodecKind pull = CodecKind::kNone;  // none, bf16, fp16, or topk (delta pulls)
};

// worker.compression: what a worker's pushes and pulls carry on the wire.
struct CompressionConfig {
  CodecChoice all;  // push / pull: every table's
  // topk: the share of a slice's values sent each push (the largest |g|),
  // the rest kept in the worker's residual (error feedback).
  double topk_ratio = 0.01;
  // pull: topk (delta pulls): the share of a dense piece's values a pull
  // answers, those that changed most since this worker's last answer; the
  // rest of the change is kept on the shard for later pulls.
  double pull_topk_ratio = 0.05;
  // What top-k's values travel in, pushes and delta pulls: none (float32,
  // sent exactly), bf16 or fp16 (half the bytes of a value; with top-k's
  // positions, an entry of about 3 bytes instead of 5). A push's rounding
  // stays in the worker's residual, a delta pull's in the shard's copy of
  // what the worker holds; with it, a delta-pulling table's whole answers
  // travel in the same codec.
  CodecKind topk_values = CodecKind::kNone;
  // Slices smaller than this (as fp32) travel uncompressed: biases and
  // other small tensors, where a codec's header and cost buy nothing.
  uint64_t min_bytes = 16384;
  // The first N clocks travel uncompressed (as DGC and 1-bit Adam warm up).
  uint32_t warmup_steps = 0;
  // tables.NAME.push / .pull: one table's codecs, over `all`.
  std::map<std::string, CodecChoice> tables;
  // The codecs of table `name`.
  const CodecChoice& For(const std::string& name) const {
    auto it = tables.find(name);
    return it == tables.end() ? all : it->second;
  }
};

struct WorkerConfig {
  int64_t rpc_timeout_ms = 30'000;      // deadline of a push, clock or stats call
  int64_t pull_timeout_ms = 120'000;    // a pull may wait on the clock this long
  int64_t connect_timeout_ms = 60'000;  // servers must answer Register within this
  uint32_t channels_per_shard = 2;      // large transfers spread over channels
  // Sparse rows a worker keeps for reuse under SSP (worker/row_cache.h); 0: none.
  uint64_t row_cache_rows = 1'000'000;
  // A worker waiting on a pull or push spins this long before it blocks: on
  // cores of its own this saves waking a halted CPU per reply; on cores it
  // shares with other daemons it takes time from them. 0: block at once.
  // -1 (auto): 3000 when every server is on this host (loopback addresses)
  // and the job's busy threads fit this machine's cores (one per server and
  // per standby on this host, one per worker, two per worker under
  // overlap_push), else 0.
  int64_t spin_wait_us = -1;
  double progress_interval_s = 5.0;  // seconds between progress lines
  // GET /metrics (Prometheus text format, plain HTTP) on this port: on
  // 127.0.0.1 when every server is on this host, else on every interface.
  // 0: none.
  uint32_t metrics_port = 0;
  // After the last step, keep answering GET /metrics this long before the
  // process exits, so that a scraper sees the final counters (set it to the
  // scrape interval or more where that matters).
  double metrics_linger_s = 0;
  // auto: a GPU when one is usable, else the CPU; cuda: a GPU or fail at start-up.
  DeviceChoice device = DeviceChoice::kAuto;
  // BSP with aggregation: a step moves each shard's dense values in this many
  // parts (common/partition.h BspParts), pushed one after another while the
  // pulls of every part wait on the shard. A shard applies a part as soon as
  // every worker's push of it is in and answers its pulls then, so the
  // first parts' values come back while the last ones are still being
  // pushed (the link carries both directions at once). 1: one push and one
  // pull a step, applied at the clock's close. At most 16; not with standbys.
  uint32_t bsp_parts = 1;
  // SSP (s >= 1) and ASP: compute step c+1 while step c's push is in flight
  // (its result serves a later step); BSP always waits.
  bool overlap_push = true;
  // A shard that is lost (unreachable, restarting) or a call that times out
  // is retried with backoff for up to this long, then the worker exits 3.
  double server_lost_timeout_s = 120;
  // BSP/SSP: how long a step may wait for the other workers (a lost worker
  // holds the barrier until it is restarted or evicted) before the worker
  // gives up with exit 3. Logged every worker.pull_timeout_ms while waiting.
  double wait_for_workers_s = 3600;
  // Shorthand kept for old job files: bf16 sets compression.push and .pull
  // to bf16 where the compression section does not name them.
  WirePrecision wire_precision = WirePrecision::kFp32;
  // How values travel between this worker and shards it reaches over the
  // network (shards reached through shared memory always get fp32: memory
  // is not the bottleneck a codec pays for). docs/DESIGN.md "Wire codecs".
  CompressionConfig compression;
  // auto: with a shard on this host, pulled values and pushed gradients go
  // through a shared-memory segment and gRPC carries only the call; shards
  // that cannot see it (another host or container) get the bytes in the
  // messages. off: always in the messages.
  SharedMemoryMode shared_memory = SharedMemoryMode::kAuto;
  // GEMMs on a GPU: fp32, or tf32 / bf16 inputs with fp32 accumulation.
  GemmPrecision gemm_precision = GemmPrecision::kFp32;
};

struct TrainingConfig {
  uint32_t epochs = 1;
  uint32_t batch_size = 64;
  int64_t max_steps = 0;         // 0: run every epoch to the end
  int64_t eval_every_steps = 0;  // rank 0 evaluates every N steps; 0: at the end only
  uint64_t seed = 1;             // shuffling
  // Experiments: `slow_rank` computes slower by slow_worker_ms a step of
  // batch_size examples (in proportion to the examples it takes, as a slower
  // device would). slow_probability p > 0: besides, every worker is slowed
  // so at each step with probability p, drawn afresh each step (a straggler
  // that comes and goes: a pause, a noisy neighbour), from training.seed
  // and the rank.
  double slow_worker_ms = 0;
  int32_t slow_rank = -1;
  double slow_probability = 0;
  // How an epoch's examples are shared. static: worker r takes the examples
  // i % W == r, batch_size a step. dynamic: each step trains on a global
  // batch of W x batch_size examples of one epoch order all workers share,
  // each worker taking a part in proportion to its measured compute rate
  // (shard 0 plans each epoch, server/epoch_planner.h); its gradient is
  // weighted by its part, so a step is still the global batch's mean. Every
  // worker reads the whole training set. Dense models on data sets in
  // memory (fashion_mnist, synthetic).
  Balance balance = Balance::kStatic;
  // dynamic: epoch 0's first N steps (at most half the epoch) run on equal
  // parts while the workers measure their rates; the rest of epoch 0 is
  // shared by them. 0: all of epoch 0 on equal parts.
  uint32_t balance_calibration_steps = 10;
};

struct DataConfig {
  DatasetKind dataset = DatasetKind::kFashionMnist;
  std::string dir = "/usr/share/datasets/fashion-mnist";
  uint32_t synthetic_train = 4096;  // synthetic: examples
  uint32_t synthetic_test = 1024;
  uint64_t synthetic_seed = 7;
  // synthetic_ctr: ids of each field drawn from a Zipf law of this exponent
  // (> 1 heavier head); the teacher is drawn from synthetic_seed.
  double zipf_exponent = 1.1;
  // criteo_tsv: click logs as text, one example a line: label (0/1), then
  // model.dense_features integers, then model.fields categories, separated by
  // tabs, any of them but the label empty (worker/example_stream.h). Plain or
  // gzip'd. Streamed: a worker holds shuffle_buffer examples, not the file.
  std::string train_file;
  std::string test_file;
  uint32_t shuffle_buffer = 65536;  // examples; 1: the file's order
  bool ctr() const {
    return dataset == DatasetKind::kSyntheticCtr || dataset == DatasetKind::kCriteoTsv;
  }
};

// Shard checkpoints (server/checkpoint.h, docs/RELIABILITY.md).
struct CheckpointConfig {
  // Folder for every shard's checkpoints (shard-N/ under it); empty: none.
  std::string dir;
  // No checkpoints at all, not even `tessera run`'s default ones (a
  // checkpoint copies the shard's tables in memory before writing them, so a
  // shard needs room for its tables twice; docs/RELIABILITY.md).
  bool disabled = false;
  int64_t every_clocks = 0;  // checkpoint when min_clock reaches a multiple; 0: not by clocks
  double every_seconds = 0;  // and/or when this long has passed; 0: not by time
  uint32_t keep = 2;         // newest K kept; a newer one is complete before an older goes
  // auto: restore the newest valid checkpoint when one exists; never: start
  // from initial values; required: exit 2 unless a valid one exists.
  RestorePolicy restore = RestorePolicy::kAuto;
  // -1: the newest valid; else a checkpoint of exactly this clock (what
  // `tessera run --resume` sets, so every shard restores the same cut).
  int64_t restore_clock = -1;
};

// Who may talk to a shard (docs/deploy.md "Security"). Off by default: a
// local job on loopback needs none of it.
struct TlsConfig {
  // PEM files. Server: cert_file + key_file (and ca_file when mutual).
  // Worker: ca_file to check the shard's certificate (+ cert/key when mutual).
  // Files are re-read when they change (cert-manager renewals).
  std::string cert_file, key_file, ca_file;
  bool mutual = false;  // shards require a client certificate signed by ca_file
  // The name the worker checks in the shard's certificate; empty: the host
  // of the shard's address.
  std::string server_name;
  uint32_t reload_s = 10;  // how often the files are checked for changes
  bool enabled() const { return !cert_file.empty() || !ca_file.empty(); }
};

struct SecurityConfig {
  TlsConfig tls;
  // A file holding the job's token: every call must carry it ("authorization:
  // Bearer <token>" metadata) or fails UNAUTHENTICATED. The health service
  // is exempt so probes work. Empty: no token.
  std::string token_file;
  // A rank passes to another process (another session) only after its
  // holder has made no call for this long; before that a second
  // registration fails ALREADY_EXISTS. Default never (infinity): a paused
  // process (GC, swap, SIGSTOP) may still be alive, so its rank never passes
  // unless the job says so; a restart that carries the holder's session
  // (security.session_file, which `tessera run` gives each worker) takes its
  // rank back at once. Set it where restarted workers cannot keep their
  // session (Kubernetes pods).
  double rank_lease_s = std::numeric_limits<double>::infinity();
  // A file holding the token a scraper of GET /metrics must send
  // ("Authorization: Bearer <token>"), on shards and workers. Empty: the
  // metrics are open to whoever reaches their port.
  std::string metrics_token_file;
  // A file holding this worker's session (32 hex characters, as
  // `tessera run` writes one per rank): the worker registers with it, so a
  // restarted worker is the same holder. Empty: a session drawn per process.
  std::string session_file;
};

// emulation: `tessera run` puts every daemon on a host of its own, a
// network namespace joined to the others by a bridge, each host's link
// shaped both ways (launcher/emulated_network.h). Needs CAP_NET_ADMIN.
struct EmulationConfig {
  // Bits per second of every host's link, each way, written as tc does
  // (100mbit, 1gbit, 10gbit); "unshaped": hosts of their own on links as
  // fast as the veths go; "none" or empty: no emulation (loopback).
  uint64_t link_rate_bps = 0;
  bool unshaped = false;
  std::string link_rate;  // as written
  // One-way delay added to every host's link (needs the netem qdisc).
  double link_delay_ms = 0;
  bool enabled() const { return link_rate_bps > 0 || unshaped; }
};

struct LoggingConfig {
  std::string level = "info";
  std::string metrics_file;  // worker JSON lines; empty: none
};

struct JobConfig {
  std::string name = "tessera-job";
  ClusterConfig cluster;
  ConsistencyConfig consistency;
  ModelConfig model;
  OptimizerConfig optimizer;
  ServerConfig server;
  WorkerConfig worker;
  TrainingConfig training;
  DataConfig data;
  CheckpointConfig checkpoint;
  SecurityConfig security;
  EmulationConfig emulation;
  LoggingConfig logging;

  uint32_t num_servers() const { return static_cast<uint32_t>(cluster.servers.size()); }
  // One line that two daemons of the same job agree on: workers, shards,
  // each table (name, kind, size or dim, optimizer). A worker's Register
  // carries it with the job's name; a shard refuses another job's.
  std::string LayoutText() const;
  // Whether a worker pushes on a thread of its own while the next step
  // computes (worker.overlap_push under SSP s >= 1 or ASP). Not for a ctr
  // model: its rows are pulled at each step's clock, which a shard serves
  // only once the previous push has advanced the worker there.
  bool overlaps_push() const {
    return worker.overlap_push && model.type != ModelType::kCtr &&
           ((consistency.mode == ConsistencyMode::kSsp && consistency.staleness >= 1) ||
            consistency.mode == ConsistencyMode::kAsp);
  }
  // The tables the model needs, in a fixed order (derived or listed).
  std::vector<TableConfig> Tables() const;
  // optimizer.tables: tables that name an optimizer of their own (each entry
  // starts from the job's optimizer and overrides keys), e.g. a ctr model's
  // wide table on ftrl while the rest trains with adam.
  std::map<std::string, OptimizerConfig> table_optimizers;
  // The optimizer of table `name`.
  const OptimizerConfig& OptimizerFor(const std::string& name) const {
    auto it = table_optimizers.find(name);
    return it == table_optimizers.end() ? optimizer : it->second;
  }
};

// Reads `path`, applies `overrides` ("a.b=value") in order, then validates.
// Errors: NOT_FOUND for a missing file, INVALID_ARGUMENT (one line) otherwise.
absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path,
                                        const std::vector<std::string>& overrides);

// Whether `address` is host:port with a port in 1..65535 (0..65535 with
// `allow_zero`: a listening address, where 0 picks a free port);
// INVALID_ARGUMENT naming `what` (a key or flag) otherwise.
absl::Status CheckHostPort(const std::string& what, const std::string& address,
                           bool allow_zero = false);

// A link rate as tc writes it ("100mbit", "1gbit", "10gbit", "500kbit",
// "64000bit") in bits per second; INVALID_ARGUMENT naming `what` otherwise.
absl::StatusOr<uint64_t> ParseLinkRate(const std::string& what, const std::string& rate);

// The same from YAML text (tests, tools).
absl::StatusOr<JobConfig> ParseJobConfig(const std::string& yaml_text,
                                         const std::vector<std::string>& overrides);

}  // namespace tessera

#endif  // TESSERA_COMMON_CONFIG_H_
