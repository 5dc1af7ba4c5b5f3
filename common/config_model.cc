// The model: section of a job file (and every optimizer section, the job's
// and each table's), split from common/config.cc, which reads the rest.
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/config_reader.h"
#include "common/status.h"
#include "yaml-cpp/yaml.h"

namespace tessera::config_internal {

static absl::Status ReadInit(MapReader& r, InitConfig* init) {
  TESSERA_RETURN_IF_ERROR(r.Choice("type", &init->type));
  TESSERA_RETURN_IF_ERROR(r.Float("value", &init->value, -1e30, 1e30));
  TESSERA_RETURN_IF_ERROR(r.Float("low", &init->low, -1e30, 1e30));
  TESSERA_RETURN_IF_ERROR(r.Float("high", &init->high, -1e30, 1e30));
  TESSERA_RETURN_IF_ERROR(r.Float("mean", &init->mean, -1e30, 1e30));
  TESSERA_RETURN_IF_ERROR(r.Float("stddev", &init->stddev, 0, 1e30));
  TESSERA_RETURN_IF_ERROR(r.Integer("seed", &init->seed, 0));
  if (init->type == InitType::kUniform && !(init->low <= init->high)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config: ", r.KeyPath("high"), " = '", init->high, "': expected >= low (", init->low, ")"));
  }
  return absl::OkStatus();
}

static absl::Status ReadTables(const YAML::Node& list, const std::string& path,
                        std::vector<TableConfig>* tables) {
  if (!list) return absl::OkStatus();
  if (!list.IsSequence()) return Bad(path, list, "a list of tables");
  std::set<std::string> names;
  for (size_t i = 0; i < list.size(); ++i) {
    std::string item_path = absl::StrCat(path, ".", i);
    MapReader r(list[i], item_path);
    if (!list[i].IsMap()) return Bad(item_path, list[i], "a mapping with name, kind, size|dim");
    TableConfig t;
    TESSERA_RETURN_IF_ERROR(r.Str("name", &t.name));
    TESSERA_RETURN_IF_ERROR(r.Choice("kind", &t.kind));
    TESSERA_RETURN_IF_ERROR(r.Integer("size", &t.size, 1, int64_t{1} << 40));
    TESSERA_RETURN_IF_ERROR(r.Integer("dim", &t.dim, 1, 1 << 20));
    TESSERA_RETURN_IF_ERROR(r.Integer("reserve_rows", &t.reserve_rows, 0, int64_t{1} << 36));
    TESSERA_RETURN_IF_ERROR(Section(r, "init", [&](MapReader& s) { return ReadInit(s, &t.init); }));
    TESSERA_RETURN_IF_ERROR(r.NoUnknownKeys());
    if (t.name.empty()) return Bad(item_path + ".name", list[i]["name"], "a non-empty name");
    if (!names.insert(t.name).second) {
      return Bad(item_path + ".name", list[i]["name"], "a name not used by another table");
    }
    if (t.kind == TableKind::kDense && t.size == 0) {
      return Bad(item_path + ".size", list[i]["size"], "an integer >= 1 for a dense table");
    }
    if (t.kind == TableKind::kDense && t.reserve_rows != 0) {
      return Bad(item_path + ".reserve_rows", list[i]["reserve_rows"],
                 "0: reserve_rows is for sparse tables (a dense one is allocated whole)");
    }
    tables->push_back(t);
  }
  return absl::OkStatus();
}

absl::Status ReadOptimizer(MapReader& s, OptimizerConfig* out) {
  OptimizerConfig& o = *out;
  TESSERA_RETURN_IF_ERROR(s.Choice("type", &o.type));
  TESSERA_RETURN_IF_ERROR(s.Float("lr", &o.lr, 0, 1e6, /*min_exclusive=*/true));
  TESSERA_RETURN_IF_ERROR(s.Float("momentum", &o.momentum, 0, 1));
  TESSERA_RETURN_IF_ERROR(s.Bool("nesterov", &o.nesterov));
  TESSERA_RETURN_IF_ERROR(s.Float("beta1", &o.beta1, 0, 0.999999));
  TESSERA_RETURN_IF_ERROR(s.Bool("lazy", &o.lazy));
  TESSERA_RETURN_IF_ERROR(s.Integer("freeze_variance_after", &o.freeze_variance_after, 0));
  TESSERA_RETURN_IF_ERROR(s.Float("beta2", &o.beta2, 0, 0.99999999));
  TESSERA_RETURN_IF_ERROR(s.Float("epsilon", &o.epsilon, 0, 1, /*min_exclusive=*/true));
  TESSERA_RETURN_IF_ERROR(s.Float("initial_accumulator", &o.initial_accumulator, 0, 1e6));
  TESSERA_RETURN_IF_ERROR(s.Float("alpha", &o.alpha, 0, 1e6, /*min_exclusive=*/true));
  TESSERA_RETURN_IF_ERROR(s.Float("beta", &o.beta, 0, 1e6));
  TESSERA_RETURN_IF_ERROR(s.Float("l1", &o.l1, 0, 1e6));
  TESSERA_RETURN_IF_ERROR(s.Float("l2", &o.l2, 0, 1e6));
  TESSERA_RETURN_IF_ERROR(s.Choice("lr_schedule", &o.lr_schedule));
  TESSERA_RETURN_IF_ERROR(s.Integer("decay_steps", &o.decay_steps, 0));
  TESSERA_RETURN_IF_ERROR(s.Float("min_lr", &o.min_lr, 0, o.lr));
  TESSERA_RETURN_IF_ERROR(s.Choice("staleness_compensation", &o.staleness_compensation));
  TESSERA_RETURN_IF_ERROR(s.Float("dc_lambda", &o.dc_lambda, 0, 1e6));
  TESSERA_RETURN_IF_ERROR(s.Float("dc_decay", &o.dc_decay, 0, 0.999999));
  TESSERA_RETURN_IF_ERROR(s.Float("gap_decay", &o.gap_decay, 0, 0.999999));
  if (o.staleness_compensation == StalenessCompensation::kGapAware &&
      o.type == OptimizerType::kFtrl) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config: ", s.KeyPath("staleness_compensation"),
        " = 'gap_aware': expected none, dc or lr_scale with type ftrl (ftrl recomputes its "
        "values from its slots, which would undo a damped step)"));
  }
  if (o.freeze_variance_after > 0 && o.type != OptimizerType::kAdam) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: ", s.KeyPath("freeze_variance_after"), " = '",
                     o.freeze_variance_after, "': expected 0 unless optimizer.type is adam"));
  }
  if (o.lr_schedule == LrSchedule::kCosine && o.decay_steps < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: ", s.KeyPath("decay_steps"), " = '", o.decay_steps,
                     "': expected an integer >= 1 when optimizer.lr_schedule is cosine"));
  }
  return absl::OkStatus();
}

absl::Status ReadModel(MapReader& r, ModelConfig* m) {
  TESSERA_RETURN_IF_ERROR(r.Choice("type", &m->type));
  TESSERA_RETURN_IF_ERROR(r.Integer("seed", &m->seed, 0));
  TESSERA_RETURN_IF_ERROR(r.Integer("kernel", &m->kernel, 1, 15));
  TESSERA_RETURN_IF_ERROR(r.Integer("fields", &m->fields, 1, 4096));
  TESSERA_RETURN_IF_ERROR(r.Integer("vocab", &m->vocab, 1, int64_t{1} << kCtrFieldShift));
  TESSERA_RETURN_IF_ERROR(r.Integer("embedding_dim", &m->embedding_dim, 1, 1024));
  TESSERA_RETURN_IF_ERROR(r.Integer("dense_features", &m->dense_features, 0, 1 << 16));
  YAML::Node channels = r.Child("conv_channels");
  if (channels) {
    if (!channels.IsSequence() || channels.size() == 0) {
      return Bad(r.KeyPath("conv_channels"), channels, "a non-empty list of channel counts");
    }
    m->conv_channels.clear();
    for (size_t i = 0; i < channels.size(); ++i) {
      uint32_t n;
      TESSERA_RETURN_IF_ERROR(MapReader::ParseInteger(
          absl::StrCat(r.KeyPath("conv_channels"), ".", i), channels[i], &n, 1, 4096));
      m->conv_channels.push_back(n);
    }
  }
  YAML::Node layers = r.Child("layers");
  if (layers) {
    if (!layers.IsSequence()) return Bad(r.KeyPath("layers"), layers, "a list of layer widths");
    m->layers.clear();
    for (size_t i = 0; i < layers.size(); ++i) {
      uint32_t width;
      TESSERA_RETURN_IF_ERROR(MapReader::ParseInteger(absl::StrCat(r.KeyPath("layers"), ".", i),
                                                      layers[i], &width, 1, 1 << 24));
      m->layers.push_back(width);
    }
  }
  TESSERA_RETURN_IF_ERROR(ReadTables(r.Child("tables"), r.KeyPath("tables"), &m->tables));
  if (m->type == ModelType::kSoftmax && m->layers.size() != 2) {
    return Bad(r.KeyPath("layers"), layers, "[inputs, classes] for a softmax model");
  }
  if (m->type == ModelType::kMlp && m->layers.size() < 2) {
    return Bad(r.KeyPath("layers"), layers, "at least [inputs, classes] for an mlp");
  }
  if (m->type == ModelType::kCnn) {
    const uint32_t pixels = m->layers.empty() ? 0 : m->layers.front();
    const uint32_t side = static_cast<uint32_t>(std::lround(std::sqrt(double(pixels))));
    const uint32_t shrink = 1u << m->conv_channels.size();
    if (m->layers.size() < 2 || side * side != pixels || side % shrink != 0) {
      return Bad(r.KeyPath("layers"), layers,
                 absl::StrCat("[pixels of a square image whose side divides by ", shrink,
                              " (one 2x2 pool per conv block), head widths..., classes]"));
    }
    if (m->kernel % 2 == 0) {
      return Bad(r.KeyPath("kernel"), r.Child("kernel"), "an odd kernel side (same padding)");
    }
  }
  if (m->type == ModelType::kCtr && (!layers || m->layers.empty())) {
    return Bad(r.KeyPath("layers"), layers,
               "the hidden widths of a ctr model's MLP, at least one, e.g. [64, 32]");
  }
  if (m->type == ModelType::kTables && m->tables.empty()) {
    return Bad(r.KeyPath("tables"), r.Child("tables"), "a non-empty list for type tables");
  }
  return absl::OkStatus();
}

}  // namespace tessera::config_internal
