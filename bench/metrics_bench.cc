// metrics_bench: what GET /metrics costs a training job (docs/OBSERVABILITY.md).
//
//   bazel-bin/bench/metrics_bench --config configs/fashion_mnist_mlp.yaml
//       [--set key=value ...] [--pairs 3] [--out DIR]
//
// Runs the job (`tessera run`, from the config) in pairs, alternating which
// goes first: without metrics endpoints (--no-metrics), and with every
// daemon's /metrics scraped once a second (a scraper thread GETs each
// endpoint in turn, as Prometheus would). Prints each run's samples/s and
// the cost of scraping (of the means, and the median of each pair's), after
// a first run that is not counted; and the daemons' CPU time per 1000 samples
// each way, which the machine's other load does not move as it moves samples/s. Then one more run in which shard 0's /metrics is
// fetched every 20 ms for the whole job: the latency distribution of a
// scrape (p50/p99/max) while the shard serves training. And what one scrape
// costs a shard in CPU, measured on an idle shard of the job scraped 2000
// times in a row (its /proc CPU time over them). A final JSON line
// holds every figure.
#include <httplib.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "launcher/launcher.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

const Program kProgram{
    "metrics_bench",
    "--config JOB.yaml [--set key=value ...] [--pairs N] [--out DIR]",
    "What scraping GET /metrics costs a training job: alternating runs without metrics and\n"
    "with every endpoint scraped each second, then the latency of scraping shard 0 every 20 ms.",
    {{"config", "FILE", "the job's YAML (required)"},
     {"set", "KEY=VALUE", "override a config key", FlagKind::kRepeatable},
     {"pairs", "N", "pairs of runs (default 3; 0: only the latency and CPU-per-scrape parts)"},
     {"out", "DIR", "where the runs' folders go (default /tmp/tessera-metrics-bench)"}}};

using Clock = std::chrono::steady_clock;

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Scrapes every target of DIR/metrics_targets.json each `period` until
// stopped; records each scrape's seconds.
class Scraper {
 public:
  Scraper(std::string dir, std::chrono::milliseconds period, bool only_first)
      : dir_(std::move(dir)), period_(period), only_first_(only_first),
        thread_([this] { Loop(); }) {}
  ~Scraper() { Finish(); }
  // Stops scraping; every scrape's seconds.
  std::vector<double> Finish() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return seconds_;
  }

 private:
  void Loop() {
    std::vector<std::string> targets;
    auto next = Clock::now();
    while (!stop_) {
      if (targets.empty()) {
        nlohmann::json t =
            nlohmann::json::parse(Read(dir_ + "/metrics_targets.json"), nullptr, false);
        if (t.is_array()) {
          for (const auto& e : t) targets.push_back(e["targets"][0].get<std::string>());
          if (only_first_ && !targets.empty()) targets.resize(1);  // server-0
        }
      }
      for (const std::string& target : targets) {
        const size_t colon = target.rfind(':');
        httplib::Client client(target.substr(0, colon), std::stoi(target.substr(colon + 1)));
        client.set_connection_timeout(1);
        const auto start = Clock::now();
        auto res = client.Get("/metrics");
        const double s = std::chrono::duration<double>(Clock::now() - start).count();
        if (res && res->status == 200) {
          seconds_.push_back(s);  // (a daemon not up yet, or gone, is skipped)
        }
      }
      next += period_;
      std::this_thread::sleep_until(next);
    }
  }

  const std::string dir_;
  const std::chrono::milliseconds period_;
  const bool only_first_;
  std::atomic<bool> stop_{false};
  std::vector<double> seconds_;  // the scraping thread's until Finish
  std::thread thread_;
};

// CPU seconds (user + system) process `pid` has used, from /proc/PID/stat.
double ProcessCpu(pid_t pid) {
  std::istringstream in(Read("/proc/" + std::to_string(pid) + "/stat"));
  std::string text = in.str();
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::vector<std::string> f;
  for (std::string x; fields >> x;) f.push_back(x);
  if (f.size() < 13) return 0;
  return (std::stod(f[11]) + std::stod(f[12])) / sysconf(_SC_CLK_TCK);
}

// What one scrape costs the shard in CPU: a tessera-server of the job (its
// tables at full size, no workers) answers `n` scrapes in a row; its CPU
// time over them, divided by n.
double CpuPerScrape(const std::string& server_binary, const std::string& config,
                    const std::vector<std::string>& sets, int n) {
  const int port = 19000 + getpid() % 1000;
  std::vector<std::string> args = {server_binary, "--config", config, "--shard", "0",
                                   "--listen", "127.0.0.1:0", "--set",
                                   "server.metrics_port=" + std::to_string(port)};
  for (const std::string& s : sets) args.insert(args.end(), {"--set", s});
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (freopen("/dev/null", "w", stdout) == nullptr || freopen("/dev/null", "w", stderr) == nullptr) {
      _exit(127);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  httplib::Client client("127.0.0.1", port);
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    auto res = client.Get("/metrics");
    up = res && res->status == 200;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  double per = -1;
  if (up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // start-up work done
    const double before = ProcessCpu(pid);
    for (int i = 0; i < n; ++i) client.Get("/metrics");
    per = (ProcessCpu(pid) - before) / n;
  }
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  return per;
}

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
}

int Main(int argc, char** argv) {
  if (auto exit = AnswerHelpOrVersion(argc, argv, kProgram)) return *exit;
  auto flags = ParseFlags(argc, argv, kProgram);
  if (!flags.ok() || !flags->Has("config")) {
    std::fprintf(stderr, "metrics_bench: %s\n",
                 flags.ok() ? "--config FILE is required"
                            : std::string(flags.status().message()).c_str());
    return 2;
  }
  auto pairs_flag = flags->GetInt("pairs", 100);
  if (!pairs_flag.ok()) {
    std::fprintf(stderr, "metrics_bench: %s\n", std::string(pairs_flag.status().message()).c_str());
    return 2;
  }
  const int pairs = static_cast<int>(pairs_flag->value_or(3));
  const std::string out = flags->Has("out") ? flags->Get("out") : "/tmp/tessera-metrics-bench";
  const std::string here = std::filesystem::path(argv[0]).parent_path().string();

  // CPU seconds of the daemons (user + system), per 1000 samples, of the last
  // run: the launcher reaps them in this process, so RUSAGE_CHILDREN sums them.
  // Unlike samples/s it does not move with what else the machine runs.
  double cpu_ms_per_1k = 0;
  auto children_cpu = [] {
    rusage u{};
    getrusage(RUSAGE_CHILDREN, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
  };
  auto run = [&](const std::string& name, bool metrics, int scrape_ms, bool only_first,
                 std::vector<double>* scrapes) -> double {
    const double cpu_before = children_cpu();
    LaunchOptions o;
    o.config_path = flags->Get("config");
    o.overrides = flags->All("set");
    o.out_dir = out + "/" + name;
    o.server_binary = here + "/../server/tessera-server";
    o.worker_binary = here + "/../worker/tessera-worker";
    o.live = false;
    o.quiet = true;
    o.metrics = metrics;
    std::error_code ec;
    std::filesystem::remove_all(o.out_dir, ec);
    std::filesystem::create_directories(o.out_dir, ec);
    int code;
    {
      std::unique_ptr<Scraper> scraper;
      if (scrape_ms > 0) {
        scraper = std::make_unique<Scraper>(o.out_dir, std::chrono::milliseconds(scrape_ms),
                                            only_first);
      }
      code = RunJob(o);
      if (scraper) {
        std::vector<double> s = scraper->Finish();
        if (scrapes) *scrapes = std::move(s);
      }
    }
    if (code != 0) return -1;
    nlohmann::json summary = nlohmann::json::parse(Read(o.out_dir + "/summary.json"), nullptr, false);
    const double rate = summary.value("samples_per_second", 0.0);
    cpu_ms_per_1k = 1e6 * (children_cpu() - cpu_before) / summary.value("samples", 1.0);
    std::printf("metrics_bench: %-14s %8.0f samples/s, %.3f CPU ms per 1000 samples%s\n",
                name.c_str(), rate, cpu_ms_per_1k,
                scrapes ? absl::StrCat(", ", scrapes->size(), " scrapes").c_str() : "");
    std::fflush(stdout);
    return rate;
  };

  // A first run, not counted: the first job after a build or a pause runs
  // slower (page cache, CPU frequency).
  if (pairs > 0 && run("warm-up", false, 0, false, nullptr) < 0) return 1;
  std::vector<double> off, scraped, costs, cpu_off, cpu_scraped;
  for (int p = 0; p < pairs; ++p) {
    std::vector<double> scrapes;
    const bool scraped_first = p % 2 == 1;
    double pair[2] = {0, 0};  // off, scraped
    for (int k = 0; k < 2; ++k) {
      const bool scrape = (k == 0) == scraped_first;
      const double rate = scrape ? run(absl::StrCat("scraped-", p), true, 1000, false, &scrapes)
                                 : run(absl::StrCat("off-", p), false, 0, false, nullptr);
      if (rate < 0) {
        std::fprintf(stderr, "metrics_bench: a run failed; its logs are under %s\n", out.c_str());
        return 1;
      }
      (scrape ? scraped : off).push_back(rate);
      (scrape ? cpu_scraped : cpu_off).push_back(cpu_ms_per_1k);
      pair[scrape ? 1 : 0] = rate;
    }
    costs.push_back(1 - pair[1] / pair[0]);
    std::printf("metrics_bench: pair %d: scraping costs %+.2f%%\n", p, 100 * costs.back());
  }
  double mean_off = 0, mean_scraped = 0;
  for (double r : off) mean_off += r / off.size();
  for (double r : scraped) mean_scraped += r / scraped.size();
  const double cost = pairs > 0 ? 1 - mean_scraped / mean_off : 0;
  const double median_cost = Quantile(costs, 0.5);
  if (pairs > 0) std::printf("metrics_bench: scraping every 1 s: %.0f vs %.0f samples/s without metrics: "
              "%+.2f%% (cost of the means); median of the pairs' costs %+.2f%%\n",
              mean_scraped, mean_off, 100 * cost, 100 * median_cost);
  double cpu_mean_off = 0, cpu_mean_scraped = 0;
  for (double c : cpu_off) cpu_mean_off += c / cpu_off.size();
  for (double c : cpu_scraped) cpu_mean_scraped += c / cpu_scraped.size();
  const double cpu_cost = pairs > 0 ? cpu_mean_scraped / cpu_mean_off - 1 : 0;
  if (pairs > 0) std::printf("metrics_bench: the daemons' CPU per 1000 samples: %.3f ms scraped vs %.3f ms "
              "without metrics: %+.2f%%\n",
              cpu_mean_scraped, cpu_mean_off, 100 * cpu_cost);

  const double cpu_per_scrape = CpuPerScrape(here + "/../server/tessera-server",
                                             flags->Get("config"), flags->All("set"), 2000);
  std::printf("metrics_bench: one scrape of an idle shard of this job costs it %.3f ms of CPU "
              "(2000 scrapes)\n",
              1e3 * cpu_per_scrape);

  std::vector<double> latency;
  if (run("latency", true, 20, /*only_first=*/true, &latency) < 0) return 1;
  std::printf("metrics_bench: GET /metrics of shard 0 during training: %zu scrapes, p50 %.2f ms, "
              "p99 %.2f ms, max %.2f ms\n",
              latency.size(), 1e3 * Quantile(latency, 0.5), 1e3 * Quantile(latency, 0.99),
              1e3 * Quantile(latency, 1.0));
  nlohmann::json j = {{"samples_per_second_off", off},
                      {"samples_per_second_scraped", scraped},
                      {"scrape_cost_fraction", cost},
                      {"scrape_cost_pairs", costs},
                      {"scrape_cost_median", median_cost},
                      {"cpu_ms_per_1k_samples_off", cpu_off},
                      {"cpu_ms_per_1k_samples_scraped", cpu_scraped},
                      {"scrape_cpu_cost_fraction", cpu_cost},
                      {"cpu_ms_per_scrape", 1e3 * cpu_per_scrape},
                      {"scrapes", latency.size()},
                      {"scrape_p50_ms", 1e3 * Quantile(latency, 0.5)},
                      {"scrape_p99_ms", 1e3 * Quantile(latency, 0.99)},
                      {"scrape_max_ms", 1e3 * Quantile(latency, 1.0)}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
