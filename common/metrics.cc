#include "common/metrics.h"

#include <dirent.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/build_info.h"

namespace tessera {

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 9.007199254740992e15) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  return absl::StrFormat("%.10g", value);
}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void Exposition::Family(absl::string_view name, absl::string_view type, absl::string_view help) {
  absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void Exposition::AppendLabels(const Labels& labels, absl::string_view le) {
  if (common_.empty() && labels.empty() && le.empty()) return;
  out_ += '{';
  bool first = true;
  auto add = [&](absl::string_view k, absl::string_view v) {
    if (!first) out_ += ',';
    first = false;
    absl::StrAppend(&out_, k, "=\"", EscapeLabelValue(v), "\"");
  };
  for (const auto& [k, v] : common_) add(k, v);
  for (const auto& [k, v] : labels) add(k, v);
  if (!le.empty()) add("le", le);
  out_ += '}';
}

void Exposition::Sample(absl::string_view name, const Labels& labels, double value) {
  out_.append(name.data(), name.size());
  AppendLabels(labels, "");
  absl::StrAppend(&out_, " ", FormatMetricValue(value), "\n");
}

void Exposition::HistogramSeries(absl::string_view name, const Labels& labels,
                                 const std::vector<double>& bounds,
                                 const std::vector<uint64_t>& counts, double sum) {
  const std::string bucket = absl::StrCat(name, "_bucket");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    const std::string le =
        i < bounds.size() ? FormatMetricValue(bounds[i]) : std::string("+Inf");
    out_ += bucket;
    AppendLabels(labels, le);
    absl::StrAppend(&out_, " ", cumulative, "\n");
  }
  Sample(absl::StrCat(name, "_sum"), labels, sum);
  Sample(absl::StrCat(name, "_count"), labels, static_cast<double>(cumulative));
}

std::string MetricsRegistry::Render() const {
  Exposition e(common_);
  for (const Collector& c : collectors_) c(e);
  WriteProcessMetrics(e);
  WriteBuildInfo(e);
  return e.text();
}

const std::vector<double>& LatencyBounds() {
  static const std::vector<double> bounds = {
      50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
      50e-3, 100e-3, 250e-3, 500e-3, 1,    2.5,    5,    10};
  return bounds;
}

namespace {

// Seconds since the epoch at which the machine booted, from /proc/stat.
double BootTime() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime") {
      in >> value;
      return value;
    }
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

int OpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int n = 0;
  while (readdir(dir) != nullptr) ++n;
  closedir(dir);
  return n - 3;  // ".", ".." and the descriptor opendir holds
}

}  // namespace

void WriteProcessMetrics(Exposition& e) {
  // /proc/self/stat: the fields after the command's closing parenthesis.
  std::ifstream in("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return;
  std::istringstream fields(stat.substr(paren + 2));
  std::vector<std::string> f;
  for (std::string s; fields >> s;) f.push_back(s);
  // f[0] is field 3 (state): utime is field 14, stime 15, num_threads 20,
  // starttime 22, vsize 23, rss (pages) 24.
  if (f.size() < 22) return;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  e.Family("process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.");
  e.Sample("process_cpu_seconds_total", (std::stod(f[11]) + std::stod(f[12])) / ticks);
  e.Family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  e.Sample("process_resident_memory_bytes", std::stod(f[21]) * page);
  e.Family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
  e.Sample("process_virtual_memory_bytes", std::stod(f[20]));
  e.Family("process_threads", "gauge", "Threads of the process.");
  e.Sample("process_threads", std::stod(f[17]));
  e.Family("process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.");
  e.Sample("process_start_time_seconds", BootTime() + std::stod(f[19]) / ticks);
  const int fds = OpenFds();
  if (fds >= 0) {
    e.Family("process_open_fds", "gauge", "Number of open file descriptors.");
    e.Sample("process_open_fds", fds);
  }
}

void WriteBuildInfo(Exposition& e) {
  const BuildInfo& b = GetBuildInfo();
  e.Family("tessera_build_info", "gauge",
           "Always 1; the labels say which Tessera build this daemon runs.");
  e.Sample("tessera_build_info",
           {{"version", b.version}, {"backend", b.backend}, {"revision", b.revision}}, 1);
}

}  // namespace tessera
