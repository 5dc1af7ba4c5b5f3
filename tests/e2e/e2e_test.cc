// End to end through real daemons on loopback, started by the launcher as a
// user would (`tessera run`): one short run per consistency mode on synthetic
// data, and the launcher's behaviour when a daemon fails. After every run no
// child process may be left.
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "e2e_fixtures.h"
#include "launcher/launcher.h"
#include "worker/cuda_backend.h"

namespace tessera {
namespace {

TEST_CASE("a job trains end to end through real daemons in every mode") {
  for (const char* mode : {"bsp", "ssp", "asp"}) {
    INFO("mode " << mode);
    auto options = Options(std::string("run-") + mode,
                           {std::string("consistency.mode=") + mode, "consistency.staleness=2"});
    REQUIRE(RunJob(options) == 0);
    std::string summary = Read(options.out_dir + "/summary.json");
    CHECK(Json(summary)["mode"] == mode);
    // Nothing died on the way (under the sanitizers a report aborts its
    // daemon, which the launcher would otherwise restart unnoticed).
    const nlohmann::json restarts_of = Json(summary)["restarts"];
    CHECK(restarts_of.size() == 4);
    for (const auto& [daemon, restarts] : restarts_of.items()) {
      INFO(daemon);
      CHECK(restarts == 0);
    }
    CHECK(Field(summary, "test_accuracy") > 0.9);
    CHECK(Field(summary, "workers") == 2);
    CHECK(Field(summary, "servers") == 2);
    CHECK(Field(summary, "samples_per_second") > 0);
    // Which backend computed (auto: the CPU where no GPU is usable).
    const std::string device = Json(summary)["device"];
    CHECK((device == "cpu" || device.rfind("cuda:", 0) == 0));
    // Both workers wrote metrics, collected in one file.
    std::set<int> finals;
    for (const auto& line : JsonLines(Read(options.out_dir + "/metrics.jsonl"))) {
      if (line["event"] == "final") finals.insert(line["rank"].get<int>());
    }
    CHECK(finals == std::set<int>{0, 1});
    // Every push named the values it came from, and the shards measured it.
    CHECK(Field(summary, "push_staleness_max") >= 0);
    for (int r = 0; r < 2; ++r) {
      const std::string result =
          Read(options.out_dir + "/result-rank" + std::to_string(r) + ".json");
      CHECK(Field(result, "pushes_measured") == Field(result, "steps"));
      CHECK(Field(result, "pushes_unmeasured") == 0);
      // BSP applies every gradient to the values it was computed from.
      if (std::string(mode) == "bsp") CHECK(Field(result, "push_staleness_max") == 0);
    }
    // Servers exited by themselves once the workers finished.
    CHECK(Read(options.out_dir + "/server-0.log").find("all 2 workers finished") !=
          std::string::npos);
    // Its last line says how stale the pushes were.
    CHECK(Read(options.out_dir + "/server-0.log").find("push staleness mean") != std::string::npos);
    CHECK(NoChildLeft());
  }
}

TEST_CASE("a job with bfloat16 on the wire and spinning workers trains end to end") {
  auto options = Options("run-bf16", {"worker.wire_precision=bf16", "worker.spin_wait_us=2000"});
  REQUIRE(RunJob(options) == 0);
  CHECK(Field(Read(options.out_dir + "/summary.json"), "test_accuracy") > 0.9);
  CHECK(NoChildLeft());
}

TEST_CASE("a CNN trains end to end through real daemons") {
  auto options = Options("run-cnn", {"model.type=cnn", "model.conv_channels=[4]", "model.kernel=3",
                                     "model.layers=[784,16,10]", "training.epochs=3"});
  REQUIRE(RunJob(options) == 0);
  std::string summary = Read(options.out_dir + "/summary.json");
  CHECK(Field(summary, "test_accuracy") > 0.8);
  CHECK(NoChildLeft());
}

TEST_CASE("a click model with sparse tables trains end to end through real daemons in every mode") {
  for (const char* mode : {"bsp", "ssp", "asp"}) {
    INFO("mode " << mode);
    LaunchOptions options = Options(std::string("run-ctr-") + mode, {});
    options.config_path = Runfile("configs/ctr_synthetic.yaml");
    options.overrides = {std::string("consistency.mode=") + mode,
                         "consistency.staleness=2",
                         "model.vocab=2000",
                         "model.fields=8",
                         "data.synthetic_train=40000",
                         "data.synthetic_test=10000",
                         "training.epochs=4",
                         "training.batch_size=128"};
    REQUIRE(RunJob(options) == 0);
    const std::string summary = Read(options.out_dir + "/summary.json");
    // The model learned most of what the teacher planted: its log loss is
    // well below the base rate's, toward the Bayes floor.
    const double base = Field(summary, "base_logloss"), bayes = Field(summary, "bayes_logloss");
    CHECK(base > bayes);
    CHECK(Field(summary, "logloss") < base);
    CHECK(Field(summary, "signal_captured") > 0.5);
    CHECK(Field(summary, "auc") > 0.65);
    CHECK(Field(summary, "unique_rows_per_batch") > 0);
    CHECK(Field(summary, "unique_rows_per_batch") < 128 * 8);  // repeated ids are pulled once
    // Under SSP the worker's row cache serves rows pulled a clock or two before.
    if (std::string(mode) == "ssp") {
      CHECK(Field(summary, "row_cache_hit_rate") > 0.05);
      CHECK(Field(summary, "row_bytes_saved") > 0);
    } else {
      CHECK(Field(summary, "row_cache_hit_rate") == 0);
    }
    CHECK(Read(options.out_dir + "/server-0.log").find("all 2 workers finished") !=
          std::string::npos);
    CHECK(NoChildLeft());
  }
}

TEST_CASE("a click log read from files trains through real daemons, bad lines counted") {
  // configs/criteo_kaggle.yaml as shipped (FTRL on the wide table), on a small
  // log the test writes: field 0's category sets the click rate (0.9 or
  // 0.1), the rest is noise; two malformed lines in the training file.
  std::mt19937_64 rng(11);
  const auto log = [&](int n, bool garbage) {
    std::string text;
    for (int i = 0; i < n; ++i) {
      const bool hot = rng() % 2;
      text += std::to_string(rng() % 100 < (hot ? 90u : 10u) ? 1 : 0);
      for (int j = 0; j < 13; ++j) text += "\t" + (j % 3 ? std::to_string(rng() % 40) : "");
      text += hot ? "\t68fd1e64" : "\t80e26c9b";
      for (int f = 1; f < 26; ++f) text += "\t" + (f % 4 ? std::to_string(rng() % 50) : "");
      text += "\n";
      if (garbage && i % 4000 == 1) text += "1\t2\t3\n";
    }
    return text;
  };
  const std::string train = TempDir("clicks-train.tsv"), test = TempDir("clicks-test.tsv");
  std::ofstream(train) << log(8000, true);
  std::ofstream(test) << log(2000, false);
  LaunchOptions options = Options("run-criteo", {});
  options.config_path = Runfile("configs/criteo_kaggle.yaml");
  options.overrides = {"data.train_file=" + train, "data.test_file=" + test,
                       "data.shuffle_buffer=2000", "model.vocab=5000",
                       "model.layers=[16]",        "training.batch_size=64",
                       "training.epochs=3"};
  REQUIRE(RunJob(options) == 0);
  const std::string summary = Read(options.out_dir + "/summary.json");
  CHECK(Field(summary, "auc") > 0.85);  // the best possible is 0.9
  CHECK(Field(summary, "logloss") < Field(summary, "base_logloss") - 0.2);
  for (int rank = 0; rank < 2; ++rank) {
    const std::string result =
        Read(options.out_dir + "/result-rank" + std::to_string(rank) + ".json");
    CHECK(Field(result, "data_lines_skipped") == 2);
    CHECK(Field(result, "steps") == 3 * (4000 / 64));  // each worker's half, whole batches
  }
  CHECK(Read(options.out_dir + "/worker-0.log").find(":3: 3 columns: expected 40") !=
        std::string::npos);
  CHECK(NoChildLeft());
}

TEST_CASE("workers that linger after finishing are not mistaken for a failure") {
  // Servers exit once every worker has called Finish; a worker process may
  // end a little later. A wrapper makes that gap 2 s, every time.
  const std::string wrapper = TempDir("slow-exit-worker.sh");
  std::ofstream(wrapper) << "#!/bin/sh\n\"" << Runfile("worker/tessera-worker")
                         << "\" \"$@\"\nrc=$?\nsleep 2\nexit $rc\n";
  REQUIRE(std::system(("chmod +x " + wrapper).c_str()) == 0);
  auto options = Options("run-linger", {"training.epochs=1"});
  options.worker_binary = wrapper;
  CHECK(RunJob(options) == 0);
  CHECK(Field(Read(options.out_dir + "/summary.json"), "test_accuracy") > 0.9);
  CHECK(NoChildLeft());
}

TEST_CASE("a failing worker stops the job, is named, and leaves no process behind") {
  // Rank 1 gets a batch larger than its data: it exits 2 at start-up.
  auto options = Options("run-fail", {"training.batch_size=100000"});
  CHECK(RunJob(options) == 1);
  CHECK(NoChildLeft());
  // Exit 2 (a config error) is never restarted: a restart would append its
  // own refusal to the same log.
  const std::string refusal = "config: training.batch_size = '100000'";
  size_t refusals = 0;
  for (const char* w : {"worker-0", "worker-1"}) {
    const std::string log = Read(options.out_dir + "/" + w + ".log");
    size_t in_log = 0;
    for (size_t at = log.find(refusal); at != std::string::npos; at = log.find(refusal, at + 1)) {
      ++in_log;
    }
    CHECK(in_log <= 1);
    refusals += in_log;
  }
  CHECK(refusals >= 1);
}

// Runs the worker binary alone; returns its exit code and sets *err to stderr.
int RunWorker(const std::string& sets, std::string* err) {
  const std::string log = TempDir("worker-alone.log");
  std::string cmd =
      Runfile("worker/tessera-worker") + " --config " + Runfile("configs/fashion_mnist_mlp.yaml") +
      (sets.find("--rank") == std::string::npos ? " --rank 0 " : " ") + sets + " 2> " + log;
  int rc = std::system(cmd.c_str());
  *err = Read(log);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

TEST_CASE("a worker's exit code says whether a restart can help") {
  std::string err;
  // No server at the address: it retries until worker.connect_timeout_ms, then exits 3.
  CHECK(RunWorker("--set 'cluster.servers=[127.0.0.1:1]' --set cluster.workers=1 "
                  "--set data.dataset=synthetic --set worker.connect_timeout_ms=700",
                  &err) == 3);
  CHECK(err.find("shard 0 at 127.0.0.1:1 did not answer within 700 ms "
                 "(worker.connect_timeout_ms; last: ") != std::string::npos);
  CHECK(err.find("); is tessera-server running there? (a restart may help)") !=
        std::string::npos);
  // A bad config: exit 2, one line naming the key.
  CHECK(RunWorker("--set training.epochs=0", &err) == 2);
  CHECK(err.find("config: training.epochs = '0': expected an integer >= 1") != std::string::npos);
  // Missing data set: exit 2, naming the package.
  CHECK(RunWorker("--set data.dir=/nonexistent", &err) == 2);
  CHECK(err.find("apt-get install dataset-fashion-mnist") != std::string::npos);
  // Issue 14's start-up probes. A batch larger than the worker's share is a
  // config error found before any server is contacted (none runs at :1 here).
  CHECK(RunWorker("--set 'cluster.servers=[127.0.0.1:1]' --set training.batch_size=100000 "
                  "--set worker.connect_timeout_ms=60000",
                  &err) == 2);
  CHECK(err.find("config: training.batch_size = '100000'") != std::string::npos);
  // A rank past 2^32 is not wrapped into range.
  CHECK(RunWorker("--rank 4294967297", &err) == 2);
  CHECK(err.find("--rank = '4294967297': expected a non-negative integer <= 4095") !=
        std::string::npos);
  // --standalone with a model no machine holds: exit 2 naming the key (was SIGABRT).
  CHECK(RunWorker("--standalone --set 'model.layers=[784,16777216,10]'", &err) == 2);
  CHECK(err.find("config: model.layers = '784,16777216,10': expected dense tables that fit") !=
        std::string::npos);
  // worker.device = cuda where no GPU is usable: exit 2 at start-up, saying why.
  if (!CudaDeviceCount().ok()) {
    CHECK(RunWorker("--set worker.device=cuda", &err) == 2);
    CHECK(err.find("tessera-worker: worker.device = 'cuda': ") != std::string::npos);
    CHECK(err.find("use device auto or cpu") != std::string::npos);
  }
}

// Processes whose command line mentions `marker`.
int ProcessesWith(const std::string& marker) {
  int count = 0;
  DIR* proc = opendir("/proc");
  while (dirent* e = readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string cmdline = Read(std::string("/proc/") + e->d_name + "/cmdline");
    for (char& ch : cmdline) ch = ch ? ch : ' ';
    if (cmdline.find(marker) != std::string::npos) ++count;
  }
  closedir(proc);
  return count;
}

TEST_CASE("Ctrl-C stops every daemon and the launcher exits 130") {
  const std::string marker = "interrupt-" + std::to_string(getpid());
  auto options = Options("run-interrupt", {"name=" + marker, "training.epochs=50"});
  pid_t launcher = fork();
  if (launcher == 0) _exit(RunJob(options));
  // Wait until every daemon runs (2 servers + 2 workers carry the marker).
  for (int i = 0; i < 100 && ProcessesWith(marker) < 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK(ProcessesWith(marker) == 4);
  kill(launcher, SIGINT);
  int status = 0;
  waitpid(launcher, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  CHECK(ProcessesWith(marker) == 0);
}

TEST_CASE("a bad config stops the launcher before anything starts") {
  auto options = Options("run-bad", {"consistency.mode=bpp"});
  CHECK(RunJob(options) == 2);
  CHECK(NoChildLeft());
}

}  // namespace
}  // namespace tessera
