// Observability end to end (docs/OBSERVABILITY.md): a 2x2 job started by
// `tessera run` serves GET /metrics on every daemon; promtool accepts every
// endpoint's text; a real Prometheus scrapes the job through a file-based
// service discovery this test writes and answers queries for the workers'
// samples and the shards' min clock; every metric the Grafana dashboard
// queries is one the daemons export; `tessera status` reads the live job
// and fails on a dead one; a worker's last scrape agrees with its result.
// Prometheus and promtool come from Debian's `prometheus` package; without
// it those parts are skipped with a line saying so.
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <set>
#include <thread>

#include "e2e_fixtures.h"
#include "tests/metrics_text.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

bool Installed(const std::string& tool) {
  int status;
  Shell("command -v " + tool + " > /dev/null 2>&1", &status);
  return status == 0;
}


// GET http://target/metrics; "" when it does not answer 200.
std::string Scrape(const std::string& target) {
  const size_t colon = target.rfind(':');
  httplib::Client client(target.substr(0, colon), std::stoi(target.substr(colon + 1)));
  client.set_connection_timeout(2);
  auto res = client.Get("/metrics");
  return res && res->status == 200 ? res->body : "";
}


// Family names (# TYPE lines) of an exposition.
std::set<std::string> Families(const std::string& text) {
  std::set<std::string> names;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("# TYPE ", 0) == 0) names.insert(line.substr(7, line.find(' ', 7) - 7));
  }
  return names;
}

// Polls `ready` every 200 ms for up to `seconds`.
bool WaitFor(double seconds, const std::function<bool()>& ready) {
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

// The address a server's log says it is ready on.
std::string ServerAddress(const std::string& log) {
  std::smatch m;
  const std::string text = Read(log);
  if (!std::regex_search(text, m, std::regex("ready on (127\\.0\\.0\\.1:[0-9]+)"))) return "";
  return m[1];
}

// A real Prometheus scraping every second the targets of a file_sd file.
class Prometheus {
 public:
  Prometheus(const std::string& dir, const std::string& sd_file) : port_(FreeLoopbackPort()) {
    const std::string config = dir + "/prometheus.yml";
    std::ofstream(config) << "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                             "scrape_configs:\n"
                             "  - job_name: tessera\n"
                             "    honor_labels: true\n"
                             "    file_sd_configs: [{files: ['"
                          << sd_file << "'], refresh_interval: 1s}]\n";
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      const std::string log = dir + "/prometheus.log";
      if (freopen(log.c_str(), "w", stdout) == nullptr || freopen(log.c_str(), "a", stderr) == nullptr) {
        _exit(127);
      }
      const std::string web = "--web.listen-address=127.0.0.1:" + std::to_string(port_);
      const std::string storage = "--storage.tsdb.path=" + dir + "/tsdb";
      const std::string cfg = "--config.file=" + config;
      execlp("prometheus", "prometheus", cfg.c_str(), storage.c_str(), web.c_str(),
             static_cast<char*>(nullptr));
      _exit(127);
    }
    pid_ = pid;
  }
  ~Prometheus() {
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
  }
  // The instant query's result array (empty on any failure).
  nlohmann::json Query(const std::string& promql) const {
    httplib::Client client("127.0.0.1", port_);
    auto res = client.Get("/api/v1/query", httplib::Params{{"query", promql}}, httplib::Headers{});
    if (!res || res->status != 200) return nlohmann::json::array();
    nlohmann::json j = nlohmann::json::parse(res->body, nullptr, false);
    if (!j.is_object() || j.value("status", "") != "success") return nlohmann::json::array();
    return j["data"]["result"];
  }

 private:
  int port_;
  pid_t pid_ = -1;
};

TEST_CASE("a 2x2 job is observable: metrics, Prometheus, the dashboard's queries, tessera status") {
  // Long enough for Prometheus to start and scrape (rank 1 is slowed: a BSP
  // job moves at its pace), and each worker answers a last scrape.
  LaunchOptions o = Options("observability", {"cluster.workers=2", "training.epochs=6",
                                              "training.slow_rank=1", "training.slow_worker_ms=25",
                                              "worker.metrics_linger_s=4"});
  // Checkpoints every second: the checkpoint metrics are exported too.
  o.overrides.push_back("checkpoint.dir=" + o.out_dir + "-checkpoints");
  o.overrides.push_back("checkpoint.every_seconds=1");
  std::error_code ec;
  fs::remove_all(o.out_dir, ec);
  fs::remove_all(o.out_dir + "-checkpoints", ec);
  int exit_code = -1;
  std::thread job([&] { exit_code = RunJob(o); });
  struct Join {
    std::thread& t;
    ~Join() {
      if (t.joinable()) t.join();
    }
  } join{job};

  // The launcher's target list: one per daemon, distinct ports.
  const std::string targets_file = o.out_dir + "/metrics_targets.json";
  REQUIRE(WaitFor(20, [&] { return fs::exists(targets_file); }));
  nlohmann::json targets;
  REQUIRE(WaitFor(5, [&] {
    targets = nlohmann::json::parse(Read(targets_file), nullptr, false);
    return targets.is_array() && targets.size() == 4;
  }));
  std::map<std::string, std::string> target_of;  // daemon -> host:port
  for (const auto& t : targets) {
    target_of[t["labels"]["daemon"].get<std::string>()] = t["targets"][0].get<std::string>();
  }
  REQUIRE(target_of.size() == 4);
  std::set<std::string> distinct;
  for (const auto& [daemon, target] : target_of) distinct.insert(target);
  CHECK(distinct.size() == 4);

  // Every endpoint answers once the job trains; promtool accepts each.
  std::map<std::string, std::string> text_of;
  REQUIRE(WaitFor(60, [&] {
    for (const auto& [daemon, target] : target_of) text_of[daemon] = Scrape(target);
    const std::string& w = text_of["worker-0"];
    return std::all_of(text_of.begin(), text_of.end(), [](auto& kv) { return !kv.second.empty(); }) &&
           w.find("tessera_worker_steps_total{job=\"fashion-mnist-mlp\",rank=\"0\"} 0\n") ==
               std::string::npos;
  }));
  const bool promtool = Installed("promtool");
  if (!promtool) WARN("SKIPPED: promtool checks (Debian's prometheus package is not installed)");
  for (const auto& [daemon, text] : text_of) {
    INFO(daemon);
    const bool server = daemon.rfind("server", 0) == 0;
    CHECK(text.find(server ? "tessera_shard_min_clock{" : "tessera_worker_samples_total{") !=
          std::string::npos);
    CHECK(text.find("process_resident_memory_bytes{") != std::string::npos);
    CHECK(text.find("tessera_build_info{") != std::string::npos);
    if (promtool) {
      const std::string file = o.out_dir + "/" + daemon + ".prom";
      std::ofstream(file) << text;
      int status;
      const std::string report = Shell("promtool check metrics < " + file + " 2>&1", &status);
      INFO(report);
      CHECK(status == 0);
    }
  }

  // Every metric the Grafana dashboard queries is one the daemons export.
  std::set<std::string> exported;
  for (const auto& [daemon, text] : text_of) {
    for (const std::string& f : Families(text)) exported.insert(f);
  }
  const nlohmann::json dashboard =
      nlohmann::json::parse(Read(Runfile("deploy/grafana/tessera.json")), nullptr, false);
  REQUIRE(dashboard.is_object());
  int queries = 0;
  const std::regex metric("\\b((tessera|process)_[a-z_]+)");
  for (const auto& panel : dashboard["panels"]) {
    for (const auto& target : panel["targets"]) {
      const std::string expr = target["expr"].get<std::string>();
      ++queries;
      for (std::sregex_iterator it(expr.begin(), expr.end(), metric), end; it != end; ++it) {
        std::string name = (*it)[1];
        for (const char* suffix : {"_bucket", "_sum", "_count"}) {
          const std::string base = name.substr(0, name.size() - std::strlen(suffix));
          if (name.size() > std::strlen(suffix) &&
              name.compare(name.size() - std::strlen(suffix), std::string::npos, suffix) == 0 &&
              exported.count(base)) {
            name = base;
          }
        }
        INFO(panel["title"].get<std::string>() << ": " << expr);
        CHECK(exported.count(name) == 1);
      }
    }
  }
  CHECK(queries >= 10);

  // A real Prometheus, through a file-based service discovery written here.
  if (!Installed("prometheus")) {
    WARN("SKIPPED: the Prometheus scrape (Debian's prometheus package is not installed)");
  } else {
    const std::string dir = o.out_dir + "/prom";
    fs::create_directories(dir);
    nlohmann::json sd = nlohmann::json::array();
    for (const auto& [daemon, target] : target_of) {
      sd.push_back({{"targets", {target}}, {"labels", {{"daemon", daemon}}}});
    }
    std::ofstream(dir + "/targets.json") << sd.dump();
    Prometheus prometheus(dir, dir + "/targets.json");
    nlohmann::json samples, min_clock;
    const bool answered = WaitFor(40, [&] {
      samples = prometheus.Query("tessera_worker_samples_total{job=\"fashion-mnist-mlp\"} > 0");
      min_clock = prometheus.Query("tessera_shard_min_clock{job=\"fashion-mnist-mlp\"}");
      return samples.size() == 2 && min_clock.size() == 2;
    });
    INFO(Read(dir + "/prometheus.log").substr(0, 4000));
    CHECK(answered);
    std::set<std::string> ranks, shards;
    for (const auto& s : samples) ranks.insert(s["metric"]["rank"].get<std::string>());
    for (const auto& s : min_clock) shards.insert(s["metric"]["shard"].get<std::string>());
    CHECK(ranks == std::set<std::string>{"0", "1"});
    CHECK(shards == std::set<std::string>{"0", "1"});
  }

  // tessera status against the live job: every shard, every worker.
  std::vector<std::string> servers = {ServerAddress(o.out_dir + "/server-0.log"),
                                      ServerAddress(o.out_dir + "/server-1.log")};
  REQUIRE_FALSE(servers[0].empty());
  REQUIRE_FALSE(servers[1].empty());
  const std::string status_cmd = Runfile("launcher/tessera") + " status --config " +
                                 o.config_path + " --set cluster.servers=[" + servers[0] + "," +
                                 servers[1] + "] --interval 0.5 --set security.token_file=" +
                                 o.out_dir + "/token";  // the job is closed by default
  {
    int status;
    const std::string screen = Shell(status_cmd + " 2>&1", &status);
    INFO(screen);
    if (fs::exists(o.out_dir + "/summary.json")) {
      WARN("the job ended before tessera status ran; its live view is not checked");
    } else {
      CHECK(status == 0);
      CHECK(screen.find("job fashion-mnist-mlp (bsp): 2 shards (2 answering), 2 workers") == 0);
      CHECK(screen.find(servers[0]) != std::string::npos);
      CHECK(screen.find(servers[1]) != std::string::npos);
      CHECK(screen.find("SERVING") != std::string::npos);
      CHECK(std::regex_search(screen, std::regex("\n0 +[0-9]+ +[0-9]+ +[a-z ]+")));  // worker 0
      CHECK(std::regex_search(screen, std::regex("\n1 +[0-9]+ +[0-9]+ +[a-z ]+")));  // worker 1
      CHECK(screen.find("unregistered") == std::string::npos);
    }
  }

  // Each worker's last scrape (it lingers after its last step) agrees with
  // its result and, summed, with summary.json.
  std::map<std::string, std::string> last;
  for (const char* worker : {"worker-0", "worker-1"}) {
    INFO(worker);
    REQUIRE(WaitFor(120, [&] {
      if (Read(o.out_dir + "/" + worker + ".log").find("answering GET /metrics") ==
          std::string::npos) {
        return false;
      }
      last[worker] = Scrape(target_of[worker]);
      return !last[worker].empty();
    }));
  }
  job.join();
  REQUIRE(exit_code == 0);
  double samples = 0;
  for (int rank = 0; rank < 2; ++rank) {
    const std::string& text = last["worker-" + std::to_string(rank)];
    const nlohmann::json result =
        Json(Read(o.out_dir + "/result-rank" + std::to_string(rank) + ".json"));
    const std::string w =
        "{job=\"fashion-mnist-mlp\",rank=\"" + std::to_string(rank) + "\"";
    CHECK(SampleValue(text, "tessera_worker_samples_total" + w + "}") ==
          result["samples"].get<double>());
    CHECK(SampleValue(text, "tessera_worker_steps_total" + w + "}") ==
          result["steps"].get<double>());
    CHECK(SampleValue(text, "tessera_worker_step_phase_seconds_count" + w +
                                ",phase=\"compute\"}") == result["steps"].get<double>());
    samples += SampleValue(text, "tessera_worker_samples_total" + w + "}");
  }
  CHECK(samples == Field(Read(o.out_dir + "/summary.json"), "samples"));

  // The job is gone: status says so and exits 1.
  int status;
  const std::string dead = Shell(status_cmd + " 2>&1", &status);
  INFO(dead);
  CHECK(status == 1);
  CHECK(dead.find("0 answering") != std::string::npos);
  CHECK(dead.find("no answer") != std::string::npos);
}

}  // namespace
}  // namespace tessera
