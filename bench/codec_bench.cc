// codec_bench: what a wire codec costs on the CPU, per training step, for a
// job's dense tables: the worker's encode (error feedback included, as
// WireCodecs runs it) and the shard's decode, against the bytes it saves.
// Compare the per-step figure with worker_bench's step time (same job) to
// see what a codec costs where the link is free.
//
//   bazel-bin/bench/codec_bench --config configs/fashion_mnist_mlp.yaml
//       --set worker.compression.push=onebit --steps 200
//
// Prints one line per table and a final JSON line.
#include <chrono>
#include <cstdio>
#include <random>

#include "absl/strings/str_format.h"
#include "common/codec.h"
#include "common/config.h"
#include "common/flags.h"
#include "nlohmann/json.hpp"
#include "worker/wire_codecs.h"

namespace tessera {
namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "codec_bench: %s\n", message.c_str());
  return 2;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

const Program kProgram{
    "codec_bench",
    "--config JOB.yaml [--set key=value ...] [--steps N]",
    "A push codec's CPU cost per step on a job's dense tables (worker.compression):\n"
    "the worker's encode with error feedback and the shard's decode, and the bytes sent.",
    {{"config", "FILE", "the job's YAML (required)"},
     {"set", "KEY=VALUE", "override a config key, e.g. worker.compression.push=topk",
      FlagKind::kRepeatable},
     {"steps", "N", "timed clocks (default 200)"}}};

int Main(int argc, char** argv) {
  if (auto exit = AnswerHelpOrVersion(argc, argv, kProgram)) return *exit;
  auto flags = ParseFlags(argc, argv, kProgram);
  if (!flags.ok()) return Fail(std::string(flags.status().message()));
  if (!flags->Has("config")) return Fail("--config FILE is required");
  auto config = LoadJobConfig(flags->Get("config"), flags->All("set"));
  if (!config.ok()) return Fail(std::string(config.status().message()));
  auto steps_flag = flags->GetInt("steps");
  if (!steps_flag.ok() || steps_flag->value_or(200) <= 0) return Fail("--steps takes N > 0");
  const int64_t steps = steps_flag->value_or(200);

  std::vector<std::string> names;
  std::vector<uint64_t> sizes;
  for (const TableConfig& t : config->Tables()) {
    names.push_back(t.name);
    sizes.push_back(t.kind == TableKind::kDense ? t.size : 0);
  }
  WireCodecs codecs(config->worker.compression, names, sizes);
  // Gradients as a step makes them: a fresh draw each clock (eight kept and
  // cycled, so the draw is not timed).
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal(0.0f, 1e-3f);
  std::vector<std::vector<std::vector<float>>> grads(8);
  for (auto& set : grads) {
    for (uint64_t n : sizes) {
      set.emplace_back(n);
      for (float& v : set.back()) v = normal(rng);
    }
  }
  std::vector<double> encode_s(sizes.size()), decode_s(sizes.size());
  std::vector<uint64_t> sent(sizes.size());
  std::vector<float> out;
  v1::Payload payload;
  for (int64_t clock = 0; clock < steps + 5; ++clock) {
    const bool timed = clock >= 5;  // the first clocks warm the buffers up
    for (size_t t = 0; t < sizes.size(); ++t) {
      if (sizes[t] == 0) continue;
      const std::vector<float>& g = grads[clock % grads.size()][t];
      const double t0 = Now();
      codecs.Encode(clock, t, 0, g, &payload);
      const double t1 = Now();
      out.resize(g.size());
      absl::Status s = CodecOf(payload.codec()).Decode(payload, absl::MakeSpan(out));
      const double t2 = Now();
      if (!s.ok()) return Fail(std::string(s.message()));
      if (timed) {
        encode_s[t] += t1 - t0;
        decode_s[t] += t2 - t1;
        sent[t] += PayloadBytes(payload);
      }
    }
  }
  double encode_us = 0, decode_us = 0, bytes = 0, raw = 0;
  for (size_t t = 0; t < sizes.size(); ++t) {
    if (sizes[t] == 0) continue;
    const double e = 1e6 * encode_s[t] / steps, d = 1e6 * decode_s[t] / steps;
    const double b = double(sent[t]) / steps;
    std::printf("table %-8s %9llu floats  %-8s encode %8.1f us  decode %8.1f us  %10.0f bytes (%.1fx)\n",
                names[t].c_str(), static_cast<unsigned long long>(sizes[t]),
                v1::Codec_Name(payload.codec()).c_str(), e, d, b, 4.0 * sizes[t] / b);
    encode_us += e;
    decode_us += d;
    bytes += b;
    raw += 4.0 * sizes[t];
  }
  std::printf("per step: encode %.1f us, decode %.1f us, %.0f of %.0f bytes (%.1fx)\n", encode_us,
              decode_us, bytes, raw, raw / bytes);
  nlohmann::json result = {{"push", NameOf(config->worker.compression.all.push)},
                           {"steps", steps},
                           {"encode_us", encode_us},
                           {"decode_us", decode_us},
                           {"bytes", bytes},
                           {"raw_bytes", raw}};
  std::printf("%s\n", result.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
