#include "launcher/summary.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

using nlohmann::json;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The JSON object in `text`; an empty object when it is missing or not JSON.
json ParseObject(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : json::object();
}

double Number(const json& j, const char* key, double fallback = 0) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

}  // namespace

std::string ProgressLine(const std::string& dir, uint32_t workers, double elapsed) {
  std::string line = absl::StrFormat("[%5.0fs]", elapsed);
  for (uint32_t r = 0; r < workers; ++r) {
    const json last = ParseObject(LastLine(absl::StrCat(dir, "/metrics-rank", r, ".jsonl")));
    const std::string event = last.value("event", "");
    if (event != "progress") {
      line += absl::StrFormat(" | w%d %s", r, event == "final" ? "done" : "starting");
      continue;
    }
    line +=
        absl::StrFormat(" | w%d ep %.0f step %.0f/%.0f loss %.3f %.0f/s", r, Number(last, "epoch"),
                        Number(last, "step"), Number(last, "steps_per_epoch"), Number(last, "loss"),
                        Number(last, "samples_per_second"));
  }
  return line;
}

std::string WriteSummary(const JobConfig& config, const std::string& dir, const RunFacts& facts) {
  std::string metrics;
  double samples = 0, train_seconds = 0, loss_sum = 0, lost = 0, reconnects = 0, worker_rss = 0;
  double measured = 0, staleness_sum = 0, staleness_max = 0;
  json rank0 = json::object();
  for (uint32_t r = 0; r < config.cluster.workers; ++r) {
    metrics += ReadFile(absl::StrCat(dir, "/metrics-rank", r, ".jsonl"));
    const json result = ParseObject(ReadFile(absl::StrCat(dir, "/result-rank", r, ".json")));
    if (r == 0) rank0 = result;
    samples += Number(result, "samples");
    train_seconds = std::max(train_seconds, Number(result, "train_seconds"));
    loss_sum += Number(result, "train_loss");
    // Every worker sees a shard's loss when it reconnects: the job lost the most any saw.
    lost = std::max(lost, Number(result, "lost_clocks"));
    reconnects += Number(result, "reconnects");
    worker_rss = std::max(worker_rss, Number(result, "peak_rss_mib"));
    const double pushes = Number(result, "pushes_measured");
    measured += pushes;
    staleness_sum += pushes * Number(result, "push_staleness_mean");
    staleness_max = std::max(staleness_max, Number(result, "push_staleness_max"));
  }
  std::ofstream(dir + "/metrics.jsonl") << metrics;
  const double accuracy = Number(rank0, "test_accuracy", -1);
  const double rate = samples / std::max(train_seconds, 1e-9);
  const double train_loss = loss_sum / config.cluster.workers;
  json restarts = json::object();
  int total_restarts = 0;
  if (facts.children != nullptr) {
    for (const Child& c : *facts.children) {
      restarts[c.name] = c.restarts;
      total_restarts += c.restarts;
    }
  }
  json summary = {
      {"job", config.name},
      {"test_accuracy", accuracy},
      {"test_loss", Number(rank0, "test_loss")},
      {"train_loss", train_loss},
      {"wall_seconds", facts.wall_seconds},
      {"train_seconds", train_seconds},
      {"samples", samples},  // examples trained on, all workers
      {"samples_per_second", rate},
      {"mode", ModeName(config.consistency.mode)},
      {"staleness", config.consistency.staleness},
      {"servers", config.num_servers()},
      {"workers", config.cluster.workers},
      {"epochs", config.training.epochs},
      {"batch_size", config.training.batch_size},
      {"optimizer", NameOf(config.optimizer.type)},
      {"device", rank0.value("device", "unknown")},
      {"restarts", restarts},
      {"lost_clocks", static_cast<int64_t>(lost)},
      {"reconnects", static_cast<int64_t>(reconnects)},
      {"resumed_from_clock", facts.resumed_from_clock},
      {"worker_peak_rss_mib", worker_rss},  // the largest worker's high-water mark
      {"compensation", NameOf(config.optimizer.staleness_compensation)},
      // Updates published between a push's read and the push (docs/DESIGN.md).
      {"push_staleness_mean", measured > 0 ? staleness_sum / measured : 0},
      {"push_staleness_max", staleness_max},
  };
  // Bytes of values every worker moved, as they travelled and as float32
  // (worker.compression): each direction's compression ratio.
  {
    double bytes[4] = {0, 0, 0, 0};
    const char* keys[4] = {"push_bytes", "push_raw_bytes", "pull_bytes", "pull_raw_bytes"};
    for (uint32_t r = 0; r < config.cluster.workers; ++r) {
      const json result = ParseObject(ReadFile(absl::StrCat(dir, "/result-rank", r, ".json")));
      for (int k = 0; k < 4; ++k) {
        if (result.contains(keys[k])) bytes[k] += Number(result, keys[k]);
      }
    }
    for (int k = 0; k < 4; ++k) summary[keys[k]] = bytes[k];
    summary["push_compression"] = bytes[0] > 0 ? bytes[1] / bytes[0] : 1.0;
    summary["pull_compression"] = bytes[2] > 0 ? bytes[3] / bytes[2] : 1.0;
    summary["push_codec"] = NameOf(config.worker.compression.all.push);
    summary["pull_codec"] = NameOf(config.worker.compression.all.pull);
    summary["link_rate"] = config.emulation.enabled() ? config.emulation.link_rate : "none";
  }
  // Click models (model.type ctr): the test set's click metrics.
  for (const char* key : {"logloss", "auc", "bayes_logloss", "base_logloss", "signal_captured"}) {
    if (rank0.contains(key)) summary[key] = Number(rank0, key);
  }
  if (rank0.contains("rows_pulled")) {
    double pulled = 0, hits = 0, saved = 0, steps = 0;
    for (uint32_t r = 0; r < config.cluster.workers; ++r) {
      const json result = ParseObject(ReadFile(absl::StrCat(dir, "/result-rank", r, ".json")));
      pulled += Number(result, "rows_pulled");
      hits += Number(result, "row_cache_hits");
      saved += Number(result, "row_bytes_saved");
      steps += Number(result, "steps");
    }
    // Each batch's rows are unique keys; the cache (SSP) serves some of them.
    summary["unique_rows_per_batch"] = steps > 0 ? (pulled + hits) / steps : 0;
    summary["rows_pulled_per_batch"] = steps > 0 ? pulled / steps : 0;
    summary["row_cache_hit_rate"] = pulled + hits > 0 ? hits / (pulled + hits) : 0;
    summary["row_bytes_saved"] = saved;
  }
  std::ofstream(dir + "/summary.json") << summary.dump(2) << "\n";
  return absl::StrFormat(
      "test accuracy %.4f | train loss %.4f | %.1f s wall | %.0f samples/s | %s%s, %d servers, "
      "%d workers%s",
      accuracy, train_loss, facts.wall_seconds, rate, ModeName(config.consistency.mode),
      config.consistency.mode == ConsistencyMode::kSsp
          ? absl::StrCat(" s=", config.consistency.staleness)
          : "",
      config.num_servers(), config.cluster.workers,
      total_restarts > 0
          ? absl::StrFormat(" | %d restart(s), %.0f clock(s) lost", total_restarts, lost)
          : "");
}

}  // namespace tessera
