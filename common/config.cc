#include "common/config.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/config_reader.h"
#include "common/logging.h"
#include "common/status.h"
#include "yaml-cpp/yaml.h"

namespace tessera {

using config_internal::Bad;
using config_internal::Describe;
using config_internal::MapReader;
using config_internal::ReadModel;
using config_internal::ReadOptimizer;
using config_internal::Section;

namespace {

// Fills *out from cluster.`key` (server_pattern, standby_pattern) when one
// is given, for num_servers shards; `list` is the key the pattern replaces.
absl::Status ExpandPattern(MapReader& r, const std::string& key, const std::string& list,
                           const ClusterConfig& cluster, std::vector<std::string>* out) {
  YAML::Node node = r.Child(key);
  if (!node) return absl::OkStatus();
  const std::string p = node.IsScalar() ? node.Scalar() : "";
  if (r.Child(list)) {
    return Bad(r.KeyPath(key), node,
               absl::StrCat("either cluster.", list, " or cluster.", key, ", not both"));
  }
  if (cluster.num_servers == 0) {
    return Bad(r.KeyPath("num_servers"), r.Child("num_servers"),
               absl::StrCat("an integer >= 1 with cluster.", key));
  }
  if (p.find("{i}") == std::string::npos || p.rfind(':') == std::string::npos) {
    return Bad(
        r.KeyPath(key), node,
        "host:port holding {i}, e.g. tessera-server-{i}.tessera-server.{namespace}.svc:50051");
  }
  std::string ns = cluster.namespace_name;
  if (ns.empty()) {
    const char* env = std::getenv("POD_NAMESPACE");
    ns = env && *env ? env : "default";
  }
  out->clear();
  for (uint32_t i = 0; i < cluster.num_servers; ++i) {
    out->push_back(absl::StrReplaceAll(p, {{"{i}", std::to_string(i)}, {"{namespace}", ns}}));
    if (!CheckHostPort("", out->back()).ok()) {
      return Bad(r.KeyPath(key), node, "host:port with a port in 1..65535");
    }
  }
  return absl::OkStatus();
}

// push / pull of worker.compression (or of one of its tables). A pull
// codec must be one a shard can serve to every worker alike.
absl::Status ReadCodecs(MapReader& r, CodecChoice* choice) {
  TESSERA_RETURN_IF_ERROR(r.Choice("push", &choice->push));
  TESSERA_RETURN_IF_ERROR(r.Choice("pull", &choice->pull));
  if (choice->pull == CodecKind::kOnebit) {
    return Bad(r.KeyPath("pull"), r.Child("pull"), "one of none|bf16|fp16|topk");
  }
  return absl::OkStatus();
}

// `key` of `s`, when present: a list of host:port addresses into *out.
absl::Status ReadAddresses(MapReader& s, const std::string& key, bool allow_empty,
                           const std::string& expected, std::vector<std::string>* out) {
  YAML::Node list = s.Child(key);
  if (!list) return absl::OkStatus();
  if (!list.IsSequence() || (!allow_empty && list.size() == 0) || list.size() > kMaxShards) {
    return Bad(s.KeyPath(key), list, expected);
  }
  out->clear();
  for (size_t i = 0; i < list.size(); ++i) {
    std::string addr = list[i].IsScalar() ? list[i].Scalar() : "";
    if (!CheckHostPort("", addr).ok()) {
      return Bad(absl::StrCat(s.KeyPath(key), ".", i), list[i], "host:port with a port in 1..65535");
    }
    out->push_back(addr);
  }
  return absl::OkStatus();
}

absl::Status ReadJob(const YAML::Node& root, JobConfig* c) {
  MapReader r(root, "");
  TESSERA_RETURN_IF_ERROR(r.CheckIsMap());
  TESSERA_RETURN_IF_ERROR(r.Str("name", &c->name));
  TESSERA_RETURN_IF_ERROR(Section(r, "cluster", [&](MapReader& s) -> absl::Status {
    TESSERA_RETURN_IF_ERROR(ReadAddresses(s, "servers", /*allow_empty=*/false,
                                          "a non-empty list of host:port addresses",
                                          &c->cluster.servers));
    TESSERA_RETURN_IF_ERROR(ReadAddresses(s, "standbys", /*allow_empty=*/true,
                                          "a list of host:port addresses, one per shard",
                                          &c->cluster.standbys));
    TESSERA_RETURN_IF_ERROR(s.Str("etcd", &c->cluster.etcd));
    TESSERA_RETURN_IF_ERROR(s.Str("server_pattern", &c->cluster.server_pattern));
    TESSERA_RETURN_IF_ERROR(s.Str("standby_pattern", &c->cluster.standby_pattern));
    TESSERA_RETURN_IF_ERROR(s.Integer("num_servers", &c->cluster.num_servers, 1, kMaxShards));
    TESSERA_RETURN_IF_ERROR(s.Str("namespace", &c->cluster.namespace_name));
    TESSERA_RETURN_IF_ERROR(s.Integer("workers", &c->cluster.workers, 1, kMaxWorkers));
    TESSERA_RETURN_IF_ERROR(
        ExpandPattern(s, "server_pattern", "servers", c->cluster, &c->cluster.servers));
    return ExpandPattern(s, "standby_pattern", "standbys", c->cluster, &c->cluster.standbys);
  }));
  if (c->cluster.servers.empty()) {
    return absl::InvalidArgumentError(
        "config: cluster.servers is missing: expected a non-empty list of host:port addresses "
        "(or cluster.server_pattern with cluster.num_servers)");
  }
  TESSERA_RETURN_IF_ERROR(Section(r, "consistency", [&](MapReader& s) -> absl::Status {
    TESSERA_RETURN_IF_ERROR(s.Choice("mode", &c->consistency.mode));
    TESSERA_RETURN_IF_ERROR(s.Integer("staleness", &c->consistency.staleness, 0, 1'000'000));
    TESSERA_RETURN_IF_ERROR(s.Bool("aggregate", &c->consistency.aggregate));
    TESSERA_RETURN_IF_ERROR(s.Choice("refresh", &c->consistency.refresh));
    TESSERA_RETURN_IF_ERROR(s.Real("evict_after_s", &c->consistency.evict_after_s, 0, 1e7));
    if (c->consistency.mode == ConsistencyMode::kBsp) c->consistency.staleness = 0;
    return absl::OkStatus();
  }));
  if (!c->cluster.standbys.empty()) {
    if (c->cluster.standbys.size() != c->cluster.servers.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config: cluster.standbys lists ", c->cluster.standbys.size(),
          " addresses: expected one per shard (", c->cluster.servers.size(), ")"));
    }
  }
  if (!c->cluster.etcd.empty()) {
    const size_t colon = c->cluster.etcd.rfind(':');
    int port = 0;
    if (colon == std::string::npos || colon == 0 ||
        !absl::SimpleAtoi(c->cluster.etcd.substr(colon + 1), &port) || port < 1 || port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("config: cluster.etcd = '", c->cluster.etcd,
                                                     "': expected host:port of etcd's clients"));
    }
    if (c->cluster.standbys.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config: cluster.etcd = '", c->cluster.etcd,
          "' without cluster.standbys: expected a standby per shard to fail over to"));
    }
  }
  TESSERA_RETURN_IF_ERROR(
      Section(r, "model", [&](MapReader& s) { return ReadModel(s, &c->model); }));
  TESSERA_RETURN_IF_ERROR(Section(r, "optimizer", [&](MapReader& s) -> absl::Status {
    TESSERA_RETURN_IF_ERROR(ReadOptimizer(s, &c->optimizer));
    YAML::Node per_table = s.Child("tables");
    if (!per_table) return absl::OkStatus();
    if (!per_table.IsMap()) {
      return Bad(s.KeyPath("tables"), per_table,
                 "a mapping of table name to optimizer settings, e.g. {wide: {type: ftrl}}");
    }
    std::set<std::string> names;
    for (const TableConfig& t : c->Tables()) names.insert(t.name);
    MapReader tables(per_table, s.KeyPath("tables"));
    for (const auto& entry : per_table) {
      const std::string name = entry.first.as<std::string>();
      if (!names.count(name)) {
        return Bad(tables.KeyPath(name), entry.first,
                   absl::StrCat("the name of one of the model's tables (",
                                absl::StrJoin(names, ", "), ")"));
      }
      TESSERA_RETURN_IF_ERROR(Section(tables, name, [&](MapReader& t) {
        OptimizerConfig own = c->optimizer;
        TESSERA_RETURN_IF_ERROR(ReadOptimizer(t, &own));
        c->table_optimizers[name] = own;
        return absl::OkStatus();
      }));
    }
    return absl::OkStatus();
  }));
  if (c->consistency.mode == ConsistencyMode::kBsp && c->consistency.aggregate) {
    std::vector<std::pair<std::string, const OptimizerConfig*>> all = {
        {"optimizer", &c->optimizer}};
    for (const auto& [name, own] : c->table_optimizers) {
      all.emplace_back(absl::StrCat("optimizer.tables.", name), &own);
    }
    for (const auto& [path, o] : all) {
      if (o->staleness_compensation == StalenessCompensation::kNone) continue;
      return absl::InvalidArgumentError(absl::StrCat(
          "config: ", path, ".staleness_compensation = '", NameOf(o->staleness_compensation),
          "': expected none under consistency.mode bsp with consistency.aggregate (every "
          "gradient is applied to the values it was computed from); use ssp, asp, or "
          "aggregate: false"));
    }
  }
  TESSERA_RETURN_IF_ERROR(Section(r, "server", [&](MapReader& s) -> absl::Status {
    ServerConfig& v = c->server;
    TESSERA_RETURN_IF_ERROR(s.Integer("max_message_bytes", &v.max_message_bytes, 1024,
                                      std::numeric_limits<int32_t>::max()));
    TESSERA_RETURN_IF_ERROR(s.Integer("threads", &v.threads, 0, 1024));
    TESSERA_RETURN_IF_ERROR(
        s.Integer("transport_memory_bytes", &v.transport_memory_bytes, -1, int64_t{1} << 40));
    TESSERA_RETURN_IF_ERROR(s.Integer("max_pull_wait_ms", &v.max_pull_wait_ms, 1));
    TESSERA_RETURN_IF_ERROR(s.Bool("reject_nonfinite", &v.reject_nonfinite));
    TESSERA_RETURN_IF_ERROR(s.Real("max_gradient_abs", &v.max_gradient_abs, 0, 3e38));
    TESSERA_RETURN_IF_ERROR(s.Real("max_parameter_abs", &v.max_parameter_abs, 0, 3e38));
    TESSERA_RETURN_IF_ERROR(s.Integer("max_sparse_rows", &v.max_sparse_rows, 0, int64_t{1} << 40));
    TESSERA_RETURN_IF_ERROR(s.Bool("pull_creates_rows", &v.pull_creates_rows));
    TESSERA_RETURN_IF_ERROR(s.Bool("exit_when_workers_done", &v.exit_when_workers_done));
    TESSERA_RETURN_IF_ERROR(
        s.Real("replication_timeout_s", &v.replication_timeout_s, 0.1, 3600));
    TESSERA_RETURN_IF_ERROR(s.Integer("replication_queue_bytes", &v.replication_queue_bytes,
                                      int64_t{1} << 20, int64_t{1} << 40));
    TESSERA_RETURN_IF_ERROR(s.Integer("lease_ttl_s", &v.lease_ttl_s, 1, 60));
    TESSERA_RETURN_IF_ERROR(s.Integer("health_port", &v.health_port, 0, 65535));
    TESSERA_RETURN_IF_ERROR(s.Integer("metrics_port", &v.metrics_port, 0, 65535));
    return s.Integer("sparse_stripes", &v.sparse_stripes, 1, 4096);
  }));
  TESSERA_RETURN_IF_ERROR(Section(r, "worker", [&](MapReader& s) -> absl::Status {
    WorkerConfig& v = c->worker;
    TESSERA_RETURN_IF_ERROR(s.Integer("rpc_timeout_ms", &v.rpc_timeout_ms, 1));
    TESSERA_RETURN_IF_ERROR(s.Integer("pull_timeout_ms", &v.pull_timeout_ms, 1));
    TESSERA_RETURN_IF_ERROR(s.Integer("connect_timeout_ms", &v.connect_timeout_ms, 1));
    TESSERA_RETURN_IF_ERROR(s.Integer("channels_per_shard", &v.channels_per_shard, 1, 63));
    TESSERA_RETURN_IF_ERROR(s.Integer("row_cache_rows", &v.row_cache_rows, 0, int64_t{1} << 32));
    TESSERA_RETURN_IF_ERROR(s.Integer("spin_wait_us", &v.spin_wait_us, -1, 1'000'000));
    TESSERA_RETURN_IF_ERROR(s.Real("progress_interval_s", &v.progress_interval_s, 0, 1e6, true));
    TESSERA_RETURN_IF_ERROR(s.Integer("metrics_port", &v.metrics_port, 0, 65535));
    TESSERA_RETURN_IF_ERROR(s.Real("metrics_linger_s", &v.metrics_linger_s, 0, 3600));
    TESSERA_RETURN_IF_ERROR(s.Integer("bsp_parts", &v.bsp_parts, 1, 16));
    if (v.bsp_parts > 1 &&
        (c->consistency.mode != ConsistencyMode::kBsp || !c->consistency.aggregate)) {
      return Bad(s.KeyPath("bsp_parts"), s.Child("bsp_parts"),
                 "1 unless consistency.mode is bsp with consistency.aggregate (parts are "
                 "applied as every worker's push of them is in)");
    }
    if (v.bsp_parts > 1 && !c->cluster.standbys.empty()) {
      return Bad(s.KeyPath("bsp_parts"), s.Child("bsp_parts"),
                 "1 with cluster.standbys (a standby follows whole clocks)");
    }
    TESSERA_RETURN_IF_ERROR(s.Bool("overlap_push", &v.overlap_push));
    TESSERA_RETURN_IF_ERROR(s.Real("server_lost_timeout_s", &v.server_lost_timeout_s, 0, 1e7));
    TESSERA_RETURN_IF_ERROR(s.Real("wait_for_workers_s", &v.wait_for_workers_s, 0, 1e7));
    TESSERA_RETURN_IF_ERROR(s.Choice("wire_precision", &v.wire_precision));
    TESSERA_RETURN_IF_ERROR(Section(s, "compression", [&](MapReader& z) -> absl::Status {
      CompressionConfig& k = v.compression;
      if (v.wire_precision == WirePrecision::kBf16) k.all = {CodecKind::kBf16, CodecKind::kBf16};
      TESSERA_RETURN_IF_ERROR(ReadCodecs(z, &k.all));
      TESSERA_RETURN_IF_ERROR(z.Real("topk_ratio", &k.topk_ratio, 0, 1, /*min_exclusive=*/true));
      TESSERA_RETURN_IF_ERROR(
          z.Real("pull_topk_ratio", &k.pull_topk_ratio, 0, 1, /*min_exclusive=*/true));
      TESSERA_RETURN_IF_ERROR(z.Choice("topk_values", &k.topk_values));
      if (k.topk_values != CodecKind::kNone && k.topk_values != CodecKind::kBf16 &&
          k.topk_values != CodecKind::kFp16) {
        return Bad(z.KeyPath("topk_values"), z.Child("topk_values"), "one of none|bf16|fp16");
      }
      TESSERA_RETURN_IF_ERROR(z.Integer("min_bytes", &k.min_bytes, 0, int64_t{1} << 40));
      TESSERA_RETURN_IF_ERROR(z.Integer("warmup_steps", &k.warmup_steps, 0, 1'000'000'000));
      YAML::Node tables = z.Child("tables");
      if (!tables) return absl::OkStatus();
      if (!tables.IsMap()) return Bad(z.KeyPath("tables"), tables, "a map of table name to codecs");
      MapReader t(tables, z.KeyPath("tables"));
      for (const auto& kv : tables) {
        const std::string name = kv.first.Scalar();
        CodecChoice choice = k.all;
        TESSERA_RETURN_IF_ERROR(
            Section(t, name, [&](MapReader& one) { return ReadCodecs(one, &choice); }));
        k.tables[name] = choice;
      }
      return t.NoUnknownKeys();
    }));
    TESSERA_RETURN_IF_ERROR(s.Choice("shared_memory", &v.shared_memory));
    TESSERA_RETURN_IF_ERROR(s.Choice("device", &v.device));
    return s.Choice("gemm_precision", &v.gemm_precision);
  }));
  TESSERA_RETURN_IF_ERROR(Section(r, "training", [&](MapReader& s) -> absl::Status {
    TrainingConfig& t = c->training;
    TESSERA_RETURN_IF_ERROR(s.Integer("epochs", &t.epochs, 1, 1'000'000));
    TESSERA_RETURN_IF_ERROR(s.Integer("batch_size", &t.batch_size, 1, 1 << 20));
    TESSERA_RETURN_IF_ERROR(s.Integer("max_steps", &t.max_steps, 0));
    TESSERA_RETURN_IF_ERROR(s.Integer("eval_every_steps", &t.eval_every_steps, 0));
    TESSERA_RETURN_IF_ERROR(s.Integer("seed", &t.seed, 0));
    TESSERA_RETURN_IF_ERROR(s.Real("slow_worker_ms", &t.slow_worker_ms, 0, 1e7));
    TESSERA_RETURN_IF_ERROR(s.Choice("balance", &t.balance));
    TESSERA_RETURN_IF_ERROR(
        s.Integer("balance_calibration_steps", &t.balance_calibration_steps, 0, 1'000'000));
    TESSERA_RETURN_IF_ERROR(s.Real("slow_probability", &t.slow_probability, 0, 1));
    return s.Integer("slow_rank", &t.slow_rank, -1, 4095);
  }));
  TESSERA_RETURN_IF_ERROR(Section(r, "data", [&](MapReader& s) -> absl::Status {
    DataConfig& d = c->data;
    TESSERA_RETURN_IF_ERROR(s.Choice("dataset", &d.dataset));
    TESSERA_RETURN_IF_ERROR(s.Str("dir", &d.dir));
    TESSERA_RETURN_IF_ERROR(s.Integer("synthetic_train", &d.synthetic_train, 1, 1 << 26));
    TESSERA_RETURN_IF_ERROR(s.Integer("synthetic_test", &d.synthetic_test, 1, 1 << 26));
    TESSERA_RETURN_IF_ERROR(s.Integer("synthetic_seed", &d.synthetic_seed, 0));
    TESSERA_RETURN_IF_ERROR(s.Real("zipf_exponent", &d.zipf_exponent, 0.01, 10));
    TESSERA_RETURN_IF_ERROR(s.Str("train_file", &d.train_file));
    TESSERA_RETURN_IF_ERROR(s.Str("test_file", &d.test_file));
    TESSERA_RETURN_IF_ERROR(s.Integer("shuffle_buffer", &d.shuffle_buffer, 1, 1 << 24));
    if (d.ctr() != (c->model.type == ModelType::kCtr)) {
      return Bad(s.KeyPath("dataset"), s.Child("dataset"),
                 d.ctr() ? "a classification data set for model.type " +
                               std::string(NameOf(c->model.type)) +
                               " (synthetic_ctr and criteo_tsv feed model.type ctr)"
                         : "synthetic_ctr or criteo_tsv for model.type ctr");
    }
    if (d.dataset == DatasetKind::kCriteoTsv) {
      for (const auto& [key, file] :
           {std::pair<const char*, const std::string*>{"train_file", &d.train_file},
            {"test_file", &d.test_file}}) {
        if (file->empty()) {
          return Bad(s.KeyPath(key), s.Child(key), "a click-log file (data.dataset criteo_tsv)");
        }
      }
    }
    return absl::OkStatus();
  }));
  if (c->training.balance == Balance::kDynamic && c->model.type == ModelType::kCtr) {
    return absl::InvalidArgumentError(
        "config: training.balance = 'dynamic': expected static for model.type ctr (dynamic "
        "balancing shares the steps of the dense models: softmax, mlp, cnn)");
  }
  TESSERA_RETURN_IF_ERROR(Section(r, "checkpoint", [&](MapReader& s) -> absl::Status {
    CheckpointConfig& k = c->checkpoint;
    TESSERA_RETURN_IF_ERROR(s.Str("dir", &k.dir));
    TESSERA_RETURN_IF_ERROR(s.Integer("every_clocks", &k.every_clocks, 0));
    TESSERA_RETURN_IF_ERROR(s.Real("every_seconds", &k.every_seconds, 0, 1e7));
    TESSERA_RETURN_IF_ERROR(s.Integer("keep", &k.keep, 1, 1000));
    TESSERA_RETURN_IF_ERROR(s.Choice("restore", &k.restore));
    TESSERA_RETURN_IF_ERROR(s.Integer("restore_clock", &k.restore_clock, -1));
    TESSERA_RETURN_IF_ERROR(s.Bool("disabled", &k.disabled));
    if (k.disabled && !k.dir.empty()) {
      return Bad(s.KeyPath("dir"), s.Child("dir"), "no folder when checkpoint.disabled is true");
    }
    if (k.restore == RestorePolicy::kRequired && k.dir.empty()) {
      return Bad(s.KeyPath("restore"), s.Child("restore"),
                 "auto or never when checkpoint.dir is empty");
    }
    return absl::OkStatus();
  }));
  TESSERA_RETURN_IF_ERROR(Section(r, "security", [&](MapReader& s) -> absl::Status {
    SecurityConfig& v = c->security;
    TESSERA_RETURN_IF_ERROR(Section(s, "tls", [&](MapReader& t) -> absl::Status {
      TESSERA_RETURN_IF_ERROR(t.Str("cert_file", &v.tls.cert_file));
      TESSERA_RETURN_IF_ERROR(t.Str("key_file", &v.tls.key_file));
      TESSERA_RETURN_IF_ERROR(t.Str("ca_file", &v.tls.ca_file));
      TESSERA_RETURN_IF_ERROR(t.Bool("mutual", &v.tls.mutual));
      TESSERA_RETURN_IF_ERROR(t.Str("server_name", &v.tls.server_name));
      TESSERA_RETURN_IF_ERROR(t.Integer("reload_s", &v.tls.reload_s, 1, 86400));
      if (v.tls.cert_file.empty() != v.tls.key_file.empty()) {
        return Bad(t.KeyPath(v.tls.cert_file.empty() ? "cert_file" : "key_file"), YAML::Node(),
                   "both security.tls.cert_file and key_file, or neither");
      }
      if (v.tls.enabled() && v.tls.ca_file.empty()) {
        return Bad(t.KeyPath("ca_file"), t.Child("ca_file"),
                   "the CA that signed the shards' certificates (workers check them with it)");
      }
      if (v.tls.mutual && v.tls.cert_file.empty()) {
        return Bad(t.KeyPath("mutual"), t.Child("mutual"),
                   "false unless security.tls.cert_file and key_file are set");
      }
      return absl::OkStatus();
    }));
    TESSERA_RETURN_IF_ERROR(s.Str("token_file", &v.token_file));
    TESSERA_RETURN_IF_ERROR(s.Str("session_file", &v.session_file));
    TESSERA_RETURN_IF_ERROR(s.Str("metrics_token_file", &v.metrics_token_file));
    const YAML::Node lease = s.Child("rank_lease_s");
    if (lease && lease.IsScalar() && lease.Scalar() == "never") {
      v.rank_lease_s = std::numeric_limits<double>::infinity();
      return absl::OkStatus();
    }
    if (!s.Real("rank_lease_s", &v.rank_lease_s, 0, 1e6).ok()) {
      return Bad(s.KeyPath("rank_lease_s"), lease, "never, or a number >= 0 and <= 1e+06");
    }
    return absl::OkStatus();
  }));
  TESSERA_RETURN_IF_ERROR(Section(r, "emulation", [&](MapReader& s) -> absl::Status {
    EmulationConfig& e = c->emulation;
    TESSERA_RETURN_IF_ERROR(s.Str("link_rate", &e.link_rate));
    e.unshaped = e.link_rate == "unshaped";
    if (!e.link_rate.empty() && e.link_rate != "none" && !e.unshaped) {
      TESSERA_ASSIGN_OR_RETURN(e.link_rate_bps,
                               ParseLinkRate(s.KeyPath("link_rate"), e.link_rate));
    }
    TESSERA_RETURN_IF_ERROR(s.Real("link_delay_ms", &e.link_delay_ms, 0, 10'000));
    if (e.link_delay_ms > 0 && !e.enabled()) {
      return Bad(s.KeyPath("link_delay_ms"), s.Child("link_delay_ms"),
                 "0 unless emulation.link_rate is set");
    }
    return absl::OkStatus();
  }));
  TESSERA_RETURN_IF_ERROR(Section(r, "logging", [&](MapReader& s) -> absl::Status {
    TESSERA_RETURN_IF_ERROR(s.Str("level", &c->logging.level));
    if (!IsLogLevel(c->logging.level)) {
      return Bad(s.KeyPath("level"), s.Child("level"), "one of trace|debug|info|warn|error|off");
    }
    return s.Str("metrics_file", &c->logging.metrics_file);
  }));
  return r.NoUnknownKeys();
}

// Sets `path` (dotted; numeric parts index lists) in `node` to `value`.
absl::Status ApplyOverride(YAML::Node node, const std::string& override_text) {
  size_t eq = override_text.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--set '", override_text, "': expected key.path=value"));
  }
  std::string path = override_text.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(override_text.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("--set ", path, ": value is not valid YAML: ", e.msg));
  }
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  std::vector<YAML::Node> chain = {node};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node cur = chain.back();
    if (cur.IsScalar() && !cur.IsNull() && i > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--set ", path, ": '", parts[i - 1], "' is not a mapping key here"));
    }
    size_t index;
    if (cur.IsSequence() && absl::SimpleAtoi(parts[i], &index) && index < cur.size()) {
      chain.push_back(cur[index]);
    } else if (cur.IsSequence() || (cur.IsScalar() && !cur.IsNull())) {
      return absl::InvalidArgumentError(
          absl::StrCat("--set ", path, ": '", parts[i], "' is not a mapping key here"));
    } else {
      chain.push_back(cur[parts[i]]);
    }
  }
  YAML::Node leaf = chain.back();
  if (leaf.IsScalar() && !leaf.IsNull()) {
    return absl::InvalidArgumentError(absl::StrCat("--set ", path, ": '", parts[parts.size() - 2],
                                                   "' is not a mapping key here"));
  }
  size_t index;
  if (leaf.IsSequence() && absl::SimpleAtoi(parts.back(), &index) && index < leaf.size()) {
    leaf[index] = value;
  } else {
    leaf[parts.back()] = value;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckHostPort(const std::string& what, const std::string& address, bool allow_zero) {
  const size_t colon = address.rfind(':');
  int port = 0;
  const bool ok = colon != std::string::npos && colon > 0 &&
                  absl::SimpleAtoi(address.substr(colon + 1), &port) &&
                  port >= (allow_zero ? 0 : 1) && port <= 65535 &&
                  address.find_first_of(" \t") == std::string::npos;
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, " = '", address, "': expected host:port with a port in ",
                   allow_zero ? "0..65535 (0: any free port)" : "1..65535"));
}

absl::StatusOr<uint64_t> ParseLinkRate(const std::string& what, const std::string& rate) {
  static constexpr std::pair<const char*, uint64_t> kUnits[] = {
      {"gbit", 1'000'000'000}, {"mbit", 1'000'000}, {"kbit", 1'000}, {"bit", 1}};
  for (const auto& [unit, scale] : kUnits) {
    if (!absl::EndsWith(rate, unit)) continue;
    double number;
    if (!absl::SimpleAtod(rate.substr(0, rate.size() - std::strlen(unit)), &number)) break;
    const double bps = number * static_cast<double>(scale);
    // tbf needs some bits a second; 400 Gbit/s is beyond any veth here.
    if (!(bps >= 8'000 && bps <= 4e11)) break;
    return static_cast<uint64_t>(bps);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("config: ", what, " = '", rate,
                   "': expected a rate from 8kbit to 400gbit, as tc writes it: 100mbit, 1gbit, "
                   "10gbit (or unshaped, or none)"));
}

std::string JobConfig::LayoutText() const {
  std::string out = absl::StrCat(cluster.workers, " workers, ", num_servers(), " shards; tables");
  for (const TableConfig& t : Tables()) {
    absl::StrAppend(&out, " ", t.name,
                    t.kind == TableKind::kDense ? absl::StrCat(" dense ", t.size)
                                                : absl::StrCat(" sparse dim ", t.dim),
                    " ", NameOf(OptimizerFor(t.name).type), ";");
  }
  // Worker and shard must cut a BSP step into the same parts.
  if (worker.bsp_parts > 1) absl::StrAppend(&out, " dense values in ", worker.bsp_parts, " parts;");
  return out;
}

std::vector<TableConfig> JobConfig::Tables() const {
  if (model.type == ModelType::kTables) return model.tables;
  std::vector<TableConfig> tables;
  std::vector<uint32_t> dense = model.layers;
  if (model.type == ModelType::kCtr) {
    TableConfig embedding;
    embedding.name = "embedding";
    embedding.kind = TableKind::kSparse;
    embedding.dim = model.embedding_dim;
    embedding.init.type = InitType::kNormal;
    embedding.init.stddev = 0.01f;
    embedding.init.seed = model.seed * 1000 + 900;
    TableConfig wide;
    wide.name = "wide";
    wide.kind = TableKind::kSparse;
    wide.dim = 1;
    wide.init.type = InitType::kZeros;
    tables.push_back(embedding);
    tables.push_back(wide);
    dense.insert(dense.begin(), model.dense_features + model.fields * model.embedding_dim);
    dense.push_back(2);
  }
  if (model.type == ModelType::kCnn) {
    uint64_t side = static_cast<uint64_t>(std::lround(std::sqrt(double(model.layers[0]))));
    uint64_t in_channels = 1;
    for (size_t i = 0; i < model.conv_channels.size(); ++i) {
      const uint64_t fan_in = uint64_t(model.kernel) * model.kernel * in_channels;
      TableConfig w;
      w.name = absl::StrCat("conv", i, ".weight");
      w.size = fan_in * model.conv_channels[i];
      w.init.type = InitType::kNormal;
      w.init.stddev = static_cast<float>(std::sqrt(2.0 / static_cast<double>(fan_in)));  // He
      w.init.seed = model.seed * 1000 + 500 + i;
      TableConfig b;
      b.name = absl::StrCat("conv", i, ".bias");
      b.size = model.conv_channels[i];
      tables.push_back(w);
      tables.push_back(b);
      in_channels = model.conv_channels[i];
      side /= 2;
    }
    dense[0] = static_cast<uint32_t>(side * side * in_channels);  // flattened features
  }
  for (size_t i = 0; i + 1 < dense.size(); ++i) {
    uint64_t in = dense[i], out = dense[i + 1];
    TableConfig w;
    w.name = absl::StrCat("fc", i, ".weight");
    w.size = in * out;
    w.init.type = InitType::kNormal;
    w.init.stddev = static_cast<float>(std::sqrt(2.0 / static_cast<double>(in)));  // He
    w.init.seed = model.seed * 1000 + i;
    TableConfig b;
    b.name = absl::StrCat("fc", i, ".bias");
    b.size = out;
    tables.push_back(w);
    tables.push_back(b);
  }
  return tables;
}

absl::StatusOr<JobConfig> ParseJobConfig(const std::string& yaml_text,
                                         const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config: not valid YAML: ", e.what()));
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) {
    // (Found by fuzzing: an override into a scalar document indexed past its path.)
    return absl::InvalidArgumentError(
        absl::StrCat("config: the document is ", Describe(root).substr(0, 64),
                     ": expected a mapping of sections (cluster:, model:, ...)"));
  }
  JobConfig config;
  try {
    for (const std::string& o : overrides) TESSERA_RETURN_IF_ERROR(ApplyOverride(root, o));
    TESSERA_RETURN_IF_ERROR(ReadJob(root, &config));
  } catch (const YAML::Exception& e) {  // a shape the readers did not foresee
    return absl::InvalidArgumentError(absl::StrCat("config: ", e.what()));
  }
  return config;
}

absl::StatusOr<JobConfig> LoadJobConfig(const std::string& path,
                                        const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("config: cannot open '", path, "': no such file or not readable"));
  }
  std::stringstream text;
  text << in.rdbuf();
  auto config = ParseJobConfig(text.str(), overrides);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

}  // namespace tessera
