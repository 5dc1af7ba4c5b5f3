#include "launcher/sweep.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/config.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// One run of the sweep: a combination of grid values, and what came of it.
struct Run {
  int index = 0;
  int repeat = 0;
  std::vector<std::string> values;  // one per grid key
  std::string label;                // "key=value key=value"
  std::string dir;
  int exit_code = -1;
  json summary = json::object();
  std::optional<double> time_to_target;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Training seconds until rank 0's periodic evaluation first reached `target`.
std::optional<double> TimeToTarget(const std::string& metrics_path, double target) {
  std::ifstream in(metrics_path);
  for (std::string line; std::getline(in, line);) {
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || j.value("event", "") != "eval" || j.value("rank", -1) != 0) continue;
    if (j.value("test_accuracy", 0.0) >= target) return j.value("elapsed_s", 0.0);
  }
  return std::nullopt;
}

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string quoted = "\"";
  for (char c : s) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

std::string Number(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return "";
  return absl::StrFormat("%.6g", it->get<double>());
}

// The metrics of results.csv and report.md, as summary.json names them.
const char* const kMetrics[] = {"test_accuracy",      "test_loss",     "train_loss",
                                "wall_seconds",       "train_seconds", "samples_per_second",
                                "push_staleness_mean", "push_compression",
                                "pull_compression"};

void WriteCsv(const SweepOptions& o, const std::vector<Run>& runs, const std::string& path) {
  std::ofstream out(path);
  std::vector<std::string> header = {"run", "repeat"};
  for (const auto& [key, values] : o.grid) header.push_back(CsvField(key));
  header.push_back("exit_code");
  for (const char* m : kMetrics) header.push_back(m);
  header.push_back("time_to_target_s");
  header.push_back("out_dir");
  out << absl::StrJoin(header, ",") << "\n";
  for (const Run& r : runs) {
    std::vector<std::string> row = {absl::StrCat(r.index), absl::StrCat(r.repeat)};
    for (const std::string& v : r.values) row.push_back(CsvField(v));
    row.push_back(absl::StrCat(r.exit_code));
    for (const char* m : kMetrics) row.push_back(Number(r.summary, m));
    row.push_back(r.time_to_target ? absl::StrFormat("%.3f", *r.time_to_target) : "");
    row.push_back(CsvField(r.dir));
    out << absl::StrJoin(row, ",") << "\n";
  }
}

// One number by a printf format chosen at run time.
std::string Formatted(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, value);
  return buf;
}

// "mean ± sd" of the values (sd over repeats: n - 1), "" when there are none.
std::string MeanSd(const std::vector<double>& v, const char* format) {
  if (v.empty()) return "";
  double mean = 0;
  for (double x : v) mean += x;
  mean /= v.size();
  if (v.size() == 1) return Formatted(format, mean);
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return absl::StrCat(Formatted(format, mean), " ± ",
                      Formatted(format, std::sqrt(ss / (v.size() - 1))));
}

void WriteReport(const SweepOptions& o, const std::vector<Run>& runs,
                 const std::vector<std::string>& plots, const std::string& path) {
  std::ofstream out(path);
  out << "# Sweep of " << o.job.config_path << "\n\n";
  if (!o.job.overrides.empty()) {
    out << "Every run: `--set " << absl::StrJoin(o.job.overrides, " --set ") << "`\n\n";
  }
  out << o.repeat << " run(s) per setting; mean ± sd over them. Runs that failed are left "
      << "out of the figures and counted in `ok`.\n\n";
  std::vector<std::string> header = {"setting", "ok"};
  for (const char* m : kMetrics) header.push_back(m);
  if (o.target_accuracy > 0) {
    header.push_back(absl::StrFormat("seconds to %.3g", o.target_accuracy));
  }
  out << "| " << absl::StrJoin(header, " | ") << " |\n|";
  for (size_t i = 0; i < header.size(); ++i) out << " --- |";
  out << "\n";
  std::vector<std::string> order;
  std::map<std::string, std::vector<const Run*>> by_setting;
  for (const Run& r : runs) {
    if (!by_setting.count(r.label)) order.push_back(r.label);
    by_setting[r.label].push_back(&r);
  }
  for (const std::string& label : order) {
    const auto& group = by_setting[label];
    int ok = 0, reached = 0;
    for (const Run* r : group) ok += r->exit_code == 0;
    std::vector<std::string> row = {label.empty() ? "(as configured)" : "`" + label + "`",
                                    absl::StrCat(ok, "/", group.size())};
    for (const char* m : kMetrics) {
      std::vector<double> v;
      for (const Run* r : group) {
        if (r->exit_code == 0 && r->summary.contains(m)) v.push_back(r->summary[m].get<double>());
      }
      const bool fraction = std::string(m) == "test_accuracy";
      row.push_back(MeanSd(v, fraction ? "%.4f" : "%.3g"));
    }
    if (o.target_accuracy > 0) {
      std::vector<double> v;
      for (const Run* r : group) {
        if (r->exit_code == 0 && r->time_to_target) v.push_back(*r->time_to_target);
      }
      reached = static_cast<int>(v.size());
      row.push_back(v.empty() ? "not reached"
                              : absl::StrCat(MeanSd(v, "%.2f"), " (", reached, "/", ok, ")"));
    }
    out << "| " << absl::StrJoin(row, " | ") << " |\n";
  }
  out << "\nColumns: summary.json's fields (docs/DESIGN.md). push_staleness_mean: updates "
         "published between a push's read and the push.\n";
  for (const std::string& plot : plots) out << "\n![" << plot << "](" << plot << ")\n";
}

// scripts/sweep_plots.py: given, next to this binary (an install), or in
// this binary's Bazel runfiles.
std::string FindPlotScript(const SweepOptions& o) {
  if (!o.plot_script.empty()) return o.plot_script;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  const fs::path dir = exe.parent_path();
  for (const fs::path& candidate :
       {dir / "sweep_plots.py",
        fs::path(exe.string() + ".runfiles") / "tessera/scripts/sweep_plots.py",
        dir / ".." / ".." / "scripts" / "sweep_plots.py"}) {
    if (fs::exists(candidate, ec)) return candidate.string();
  }
  return "";
}

// Runs the plot script on `dir`; the PNGs it wrote, or why there are none.
absl::StatusOr<std::vector<std::string>> Plot(const SweepOptions& o, const std::string& dir) {
  const std::string script = FindPlotScript(o);
  if (script.empty()) {
    return absl::NotFoundError("scripts/sweep_plots.py not found next to tessera (--plot-script)");
  }
  // Debian's interpreter first: its python3-matplotlib is what install_deps.sh installs.
  const std::string python = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
  const std::string command =
      absl::StrCat(python, " '", script, "' '", dir, "' > '", dir, "/plots.log' 2>&1");
  if (int rc = std::system(command.c_str()); rc != 0) {
    std::string log = ReadFile(dir + "/plots.log");
    while (!log.empty() && log.back() == '\n') log.pop_back();
    const size_t last = log.rfind('\n');
    return absl::InternalError(
        absl::StrCat("the plots failed (", dir,
                     "/plots.log): ", last == std::string::npos ? log : log.substr(last + 1),
                     "; matplotlib is Debian's python3-matplotlib (scripts/install_deps.sh)"));
  }
  std::vector<std::string> plots;
  std::ifstream list(dir + "/plots.log");
  for (std::string line; std::getline(list, line);) {
    if (line.size() > 4 && line.substr(line.size() - 4) == ".png") plots.push_back(line);
  }
  return plots;
}

}  // namespace

absl::StatusOr<std::pair<std::string, std::vector<std::string>>> ParseGrid(const std::string& arg) {
  const size_t eq = arg.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--grid '", arg, "': expected key=value1,value2,... (e.g. consistency.mode=bsp,asp)"));
  }
  std::vector<std::string> values;
  std::string current;
  int depth = 0;
  for (char c : arg.substr(eq + 1)) {
    if (c == '[' || c == '{') ++depth;
    if (c == ']' || c == '}') --depth;
    if (c == ',' && depth == 0) {
      values.push_back(current);
      current.clear();
    } else {
      current += c;
    }
  }
  values.push_back(current);
  for (const std::string& v : values) {
    if (v.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--grid '", arg, "': an empty value; expected key=value1,value2,..."));
    }
  }
  return std::make_pair(arg.substr(0, eq), values);
}

int RunSweep(const SweepOptions& o) {
  // Every combination, the first key slowest.
  std::vector<std::vector<std::string>> combos = {{}};
  for (const auto& [key, values] : o.grid) {
    std::vector<std::vector<std::string>> next;
    for (const auto& combo : combos) {
      for (const std::string& v : values) {
        next.push_back(combo);
        next.back().push_back(v);
      }
    }
    combos = std::move(next);
  }
  std::vector<Run> runs;
  for (size_t c = 0; c < combos.size(); ++c) {
    std::vector<std::string> sets = o.job.overrides, label;
    for (size_t k = 0; k < o.grid.size(); ++k) {
      sets.push_back(absl::StrCat(o.grid[k].first, "=", combos[c][k]));
      label.push_back(sets.back());
    }
    // A setting the config refuses stops the sweep before anything runs.
    if (auto config = LoadJobConfig(o.job.config_path, sets); !config.ok()) {
      std::fprintf(stderr, "tessera sweep: %s%s\n",
                   label.empty() ? "" : absl::StrCat(absl::StrJoin(label, " "), ": ").c_str(),
                   std::string(config.status().message()).c_str());
      return 2;
    }
    for (int r = 0; r < o.repeat; ++r) {
      Run run;
      run.index = static_cast<int>(runs.size());
      run.repeat = r;
      run.values = combos[c];
      run.label = absl::StrJoin(label, " ");
      run.dir = absl::StrFormat("%s/runs/%03d", o.job.out_dir, run.index);
      runs.push_back(std::move(run));
    }
  }
  std::error_code ec;
  fs::create_directories(o.job.out_dir + "/runs", ec);
  if (ec) {
    std::fprintf(stderr, "tessera sweep: cannot create %s: %s\n", o.job.out_dir.c_str(),
                 ec.message().c_str());
    return 2;
  }
  int failed = 0;
  for (Run& run : runs) {
    std::printf("tessera sweep: run %d of %zu: %s%s\n", run.index + 1, runs.size(),
                run.label.empty() ? "as configured" : run.label.c_str(),
                o.repeat > 1
                    ? absl::StrFormat(" (repeat %d of %d)", run.repeat + 1, o.repeat).c_str()
                    : "");
    std::fflush(stdout);
    LaunchOptions job = o.job;
    for (size_t k = 0; k < o.grid.size(); ++k) {
      job.overrides.push_back(absl::StrCat(o.grid[k].first, "=", run.values[k]));
    }
    job.out_dir = run.dir;
    job.live = false;
    job.quiet = true;
    run.exit_code = RunJob(job);
    json summary = json::parse(ReadFile(run.dir + "/summary.json"), nullptr, false);
    if (summary.is_object()) run.summary = summary;
    if (o.target_accuracy > 0) {
      run.time_to_target = TimeToTarget(run.dir + "/metrics.jsonl", o.target_accuracy);
    }
    if (run.exit_code == 130) {
      std::printf("tessera sweep: interrupted; results so far in %s/results.csv\n",
                  o.job.out_dir.c_str());
      WriteCsv(o, runs, o.job.out_dir + "/results.csv");
      return 130;
    }
    failed += run.exit_code != 0;
    std::printf("tessera sweep:   %s\n",
                run.exit_code != 0
                    ? absl::StrCat("failed (exit ", run.exit_code, "); logs in ", run.dir).c_str()
                    : absl::StrFormat("test accuracy %.4f | train loss %.4f | %.1f s | %.0f "
                                      "samples/s | push staleness %.2f",
                                      run.summary.value("test_accuracy", 0.0),
                                      run.summary.value("train_loss", 0.0),
                                      run.summary.value("wall_seconds", 0.0),
                                      run.summary.value("samples_per_second", 0.0),
                                      run.summary.value("push_staleness_mean", 0.0))
                          .c_str());
    std::fflush(stdout);
    WriteCsv(o, runs, o.job.out_dir + "/results.csv");
  }
  absl::StatusOr<std::vector<std::string>> plots = Plot(o, o.job.out_dir);
  if (!plots.ok())
    std::fprintf(stderr, "tessera sweep: %s\n", std::string(plots.status().message()).c_str());
  WriteReport(o, runs, plots.ok() ? *plots : std::vector<std::string>{},
              o.job.out_dir + "/report.md");
  std::printf("tessera sweep: %zu runs, %d failed; %s/results.csv, %s/report.md%s\n", runs.size(),
              failed, o.job.out_dir.c_str(), o.job.out_dir.c_str(),
              plots.ok() ? absl::StrCat(", ", plots->size(), " plots").c_str() : "");
  return failed > 0 || !plots.ok() ? 1 : 0;
}

}  // namespace tessera
