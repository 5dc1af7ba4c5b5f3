// Faults on a running job, end to end through real daemons started by the
// launcher: kill -9 of a server (BSP, SSP, ASP) or a worker at a set moment
// (under dynamic balancing too: the restarted worker must train on the plans
// its peer did), a worker paused for 10 s, a shard paused until its workers
// give up (exit 3, restarted), restarts running out, and jobs stopped and
// resumed (BSP, SSP, ASP). Every job must
// finish (exit 0) with the accuracy of an uninterrupted run, and a resumed
// BSP job with exactly its parameters.
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "e2e_fixtures.h"
#include "server/checkpoint.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kEveryClocks = 20;

// A job run on a thread of this process, with the pids of its daemons.
class Job {
 public:
  explicit Job(LaunchOptions options) : options_(std::move(options)) {
    options_.on_spawn = [this](const std::string& name, pid_t pid) {
      std::lock_guard<std::mutex> lock(mu_);
      pids_[name] = pid;
    };
    thread_ = std::thread([this] { rc_ = RunJob(options_); });
  }
  int Wait() {
    thread_.join();
    return rc_;
  }
  pid_t Pid(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    return pids_.at(name);
  }
  // Blocks until shard `shard` has written a checkpoint of clock >= `clock`.
  void WaitForCheckpoint(int shard, int64_t clock) {
    tessera::WaitForCheckpoint(options_.out_dir + "/checkpoints", shard, clock);
  }
  const LaunchOptions& options() const { return options_; }

 private:
  LaunchOptions options_;
  std::mutex mu_;
  std::map<std::string, pid_t> pids_;
  int rc_ = -1;
  std::thread thread_;
};

// Long enough (12 epochs of 64 clocks, a second or two) that a fault at a
// checkpoint of clock 60-100 lands while every daemon still has work to do.
LaunchOptions FaultOptions(const std::string& out, const std::string& mode, int epochs = 12) {
  return Options(out, {"consistency.mode=" + mode, "consistency.staleness=2",
                       "training.epochs=" + std::to_string(epochs),
                       "checkpoint.every_clocks=" + std::to_string(kEveryClocks)});
}

double Accuracy(const LaunchOptions& o) {
  return Field(Read(o.out_dir + "/summary.json"), "test_accuracy");
}

TEST_CASE("kill -9 of a server mid-run: restarted, restored, the job finishes as well") {
  for (const char* mode : {"bsp", "ssp", "asp"}) {
    INFO("mode " << mode);
    Job baseline(FaultOptions(std::string("base-") + mode, mode));
    REQUIRE(baseline.Wait() == 0);
    Job job(FaultOptions(std::string("kill-server-") + mode, mode));
    job.WaitForCheckpoint(1, 3 * kEveryClocks);
    REQUIRE(kill(job.Pid("server-1"), SIGKILL) == 0);
    REQUIRE(job.Wait() == 0);
    const std::string summary = Read(job.options().out_dir + "/summary.json");
    CHECK(Json(summary)["restarts"]["server-1"] == 1);
    CHECK(Field(summary, "reconnects") >= 2);  // both workers came back
    CHECK(std::abs(Accuracy(job.options()) - Accuracy(baseline.options())) <= 0.01);
    // The restarted shard said what it restored.
    const std::string log = Read(job.options().out_dir + "/server-1.log");
    CHECK(log.find("restored checkpoint of clock") != std::string::npos);
    CHECK(NoChildLeft());
  }
}

TEST_CASE("kill -9 of a worker mid-run: restarted, it goes on from the shards' clock") {
  Job baseline(FaultOptions("base-worker", "bsp"));
  REQUIRE(baseline.Wait() == 0);
  Job job(FaultOptions("kill-worker", "bsp"));
  job.WaitForCheckpoint(0, 3 * kEveryClocks);
  REQUIRE(kill(job.Pid("worker-1"), SIGKILL) == 0);
  REQUIRE(job.Wait() == 0);
  const std::string summary = Read(job.options().out_dir + "/summary.json");
  CHECK(Json(summary)["restarts"]["worker-1"] == 1);
  // BSP is deterministic and a killed worker loses at most its own step,
  // which it does again: the same model as without the fault.
  CHECK(Accuracy(job.options()) == Accuracy(baseline.options()));
  CHECK(NoChildLeft());
}

// The plans a worker's log says it trained on: "epoch 3" (or "epoch 1's
// calibration steps") -> "[72, 56]", each as often as it was asked for.
std::multimap<std::string, std::string> PlansLogged(const std::string& log) {
  std::multimap<std::string, std::string> plans;
  size_t at = 0;
  while ((at = log.find(": steps shared [", at)) != std::string::npos) {
    const size_t start = log.rfind("] epoch ", at) + 2;
    const size_t end = log.find(']', at);
    plans.emplace(log.substr(start, at - start), log.substr(at + 15, end - at - 14));
    at = end;
  }
  return plans;
}

TEST_CASE("kill -9 of a worker under dynamic balancing: restarted, it trains on the plans its peer did") {
  LaunchOptions o = FaultOptions("kill-worker-dynamic", "bsp");
  o.overrides.push_back("training.balance=dynamic");
  o.overrides.push_back("training.slow_rank=1");
  o.overrides.push_back("training.slow_worker_ms=5");
  Job job(o);
  job.WaitForCheckpoint(0, 3 * kEveryClocks);  // past epoch 0's calibration steps
  REQUIRE(kill(job.Pid("worker-1"), SIGKILL) == 0);
  REQUIRE(job.Wait() == 0);
  const std::string summary = Read(job.options().out_dir + "/summary.json");
  CHECK(Json(summary)["restarts"]["worker-1"] == 1);
  const auto peer = PlansLogged(Read(job.options().out_dir + "/worker-0.log"));
  const auto restarted = PlansLogged(Read(job.options().out_dir + "/worker-1.log"));
  REQUIRE(peer.count("epoch 1's calibration steps") == 1);
  REQUIRE(peer.count("epoch 12") == 1);
  // Every plan either worker used is the one the other used for those steps.
  for (const auto& [when, shares] : restarted) {
    INFO(when << ": worker 1 " << shares);
    REQUIRE(peer.count(when) == 1);
    CHECK(peer.find(when)->second == shares);
  }
  CHECK(restarted.count("epoch 12") == 1);
  // After the calibration steps the slowed worker takes the smaller part.
  CHECK(peer.find("epoch 1's calibration steps")->second != peer.find("epoch 12")->second);
  CHECK(NoChildLeft());
}

TEST_CASE("a worker paused for 10 s under BSP: nobody fails, nothing restarts") {
  Job job(FaultOptions("pause-worker", "bsp", /*epochs=*/40));
  job.WaitForCheckpoint(0, 2 * kEveryClocks);
  REQUIRE(kill(job.Pid("worker-1"), SIGSTOP) == 0);
  std::this_thread::sleep_for(std::chrono::seconds(10));
  REQUIRE(kill(job.Pid("worker-1"), SIGCONT) == 0);
  REQUIRE(job.Wait() == 0);
  const std::string summary = Read(job.options().out_dir + "/summary.json");
  for (const char* d : {"server-0", "server-1", "worker-0", "worker-1"}) {
    CHECK(summary.find(std::string("\"") + d + "\": 0") != std::string::npos);
  }
  // The shards said whom they waited for: at least one did. (Both, unless
  // SIGSTOP landed after worker 1's push reached one shard and before it
  // reached the other: then only the second waits. CI saw that once.)
  const std::string said =
      Read(job.options().out_dir + "/server-0.log") + Read(job.options().out_dir + "/server-1.log");
  CHECK(said.find("held by worker(s) 1") != std::string::npos);
  CHECK(NoChildLeft());
}

// A tessera-worker started by hand against `job`'s running shards, with the
// job's own settings plus `sets`; its exit code, and its stderr in *err.
int Stranger(const Job& job, const std::string& sets, std::string* err) {
  const LaunchOptions& o = job.options();
  const nlohmann::json cluster = Json(Read(o.out_dir + "/cluster.json"));
  std::string servers;
  for (const auto& s : cluster["servers"]) servers += (servers.empty() ? "" : ",") + s.get<std::string>();
  std::string cmd = Runfile("worker/tessera-worker") + " --config " + o.config_path;
  for (const std::string& s : o.overrides) cmd += " --set '" + s + "'";
  const std::string log = o.out_dir + "/stranger.log";
  cmd += " --set 'cluster.servers=[" + servers + "]' --set worker.connect_timeout_ms=5000 " + sets +
         " 2> " + log + " > /dev/null";
  const int rc = std::system(cmd.c_str());
  *err = Read(log);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

TEST_CASE("a job is closed by default, and a paused worker's rank is not taken, nor joined by "
          "another job") {
  Job job(FaultOptions("closed", "bsp", /*epochs=*/40));
  job.WaitForCheckpoint(0, 2 * kEveryClocks);
  const std::string token = job.options().out_dir + "/token";
  std::string err;
  // No flags given to tessera run, yet a client without the token is refused.
  CHECK(Stranger(job, "--rank 1", &err) == 2);
  CHECK(err.find("token") != std::string::npos);
  // Worker 0 paused past the old 5 s lease (a GC or swap stall): a stranger
  // with the token still cannot take its rank.
  REQUIRE(kill(job.Pid("worker-0"), SIGSTOP) == 0);
  std::this_thread::sleep_for(std::chrono::seconds(6));
  CHECK(Stranger(job, "--rank 0 --set security.token_file=" + token, &err) == 2);
  CHECK(err.find("held by another process") != std::string::npos);
  // Another job's worker with the right token is refused, naming both jobs.
  CHECK(Stranger(job, "--rank 0 --set name=another-job --set security.token_file=" + token, &err) ==
        2);
  CHECK(err.find("job 'another-job'") != std::string::npos);
  CHECK(err.find("serves job 'fashion-mnist-mlp'") != std::string::npos);
  REQUIRE(kill(job.Pid("worker-0"), SIGCONT) == 0);
  // The job goes on as if nothing happened: no daemon restarted.
  REQUIRE(job.Wait() == 0);
  const std::string summary = Read(job.options().out_dir + "/summary.json");
  for (const char* d : {"server-0", "server-1", "worker-0", "worker-1"}) {
    CHECK(summary.find(std::string("\"") + d + "\": 0") != std::string::npos);
  }
  CHECK(Accuracy(job.options()) > 0.5);
  CHECK(NoChildLeft());
}

TEST_CASE("a shard lost mid-run past worker.server_lost_timeout_s: workers exit 3, are restarted") {
  LaunchOptions o = FaultOptions("lost-shard", "bsp", /*epochs=*/20);
  o.overrides.push_back("worker.rpc_timeout_ms=1000");
  o.overrides.push_back("worker.connect_timeout_ms=2000");
  o.overrides.push_back("worker.server_lost_timeout_s=2");
  Job job(o);
  job.WaitForCheckpoint(1, 2 * kEveryClocks);
  // Shard 1 stops answering (a hung host): a call times out (a push after
  // 1 s; a parked pull when its keepalive ping goes unanswered, about 3 s),
  // reconnecting fails for 2 s, and the workers exit 3, "a restart may
  // help"; the launcher restarts them (the shard's process is alive: it is
  // not restarted), they register again once the shard answers and go on.
  // Paused 8 s: past the slowest detection (3 + 2 s) with room for a loaded
  // machine (at 5 s a worker in a parked pull sometimes outlasted the pause).
  REQUIRE(kill(job.Pid("server-1"), SIGSTOP) == 0);
  std::this_thread::sleep_for(std::chrono::seconds(8));
  REQUIRE(kill(job.Pid("server-1"), SIGCONT) == 0);
  REQUIRE(job.Wait() == 0);
  const nlohmann::json summary = Json(Read(o.out_dir + "/summary.json"));
  int restarted = 0;
  for (const char* w : {"worker-0", "worker-1"}) {
    INFO(w);
    const std::string log = Read(o.out_dir + "/" + std::string(w) + ".log");
    if (summary["restarts"][w] == 0) continue;
    ++restarted;
    CHECK(log.find("could not reconnect within 2 s") != std::string::npos);
    CHECK(log.find("(a restart may help)") != std::string::npos);
  }
  CHECK(restarted >= 1);
  CHECK(summary["restarts"]["server-1"] == 0);  // a paused shard is not a dead one
  CHECK(Accuracy(o) > 0.9);
  CHECK(NoChildLeft());
}

TEST_CASE("--max-restarts runs out: a worker killed twice with one restart allowed fails the job") {
  LaunchOptions o = FaultOptions("restarts-run-out", "bsp", /*epochs=*/40);
  o.max_restarts = 1;
  Job job(o);
  job.WaitForCheckpoint(0, kEveryClocks);
  const pid_t first = job.Pid("worker-0");
  REQUIRE(kill(first, SIGKILL) == 0);
  pid_t second = first;
  for (int i = 0; i < 200 && second == first; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    second = job.Pid("worker-0");
  }
  REQUIRE(second != first);  // restarted once
  std::this_thread::sleep_for(std::chrono::seconds(1));
  REQUIRE(kill(second, SIGKILL) == 0);
  CHECK(job.Wait() == 1);  // not a third time
  CHECK(job.Pid("worker-0") == second);
  CHECK(NoChildLeft());
}

TEST_CASE("a BSP job stopped and resumed ends with exactly the parameters of one never stopped; SSP and ASP resume") {
  Job whole(FaultOptions("resume-whole", "bsp"));
  REQUIRE(whole.Wait() == 0);
  LaunchOptions options = FaultOptions("resume-stopped", "bsp");
  // A cut queued while the previous one is still being written replaces a
  // waiting one, so under load the shards may skip different cuts; with
  // the two newest kept (the default) they can then share none. Five kept
  // leave a common one on any machine this runs on.
  options.overrides.push_back("checkpoint.keep=5");
  Job stopped(options);
  // Both shards: a shard's clock can trail the other's by the pushes still
  // in flight, and the resume takes the newest cut both have.
  stopped.WaitForCheckpoint(0, 5 * kEveryClocks);
  stopped.WaitForCheckpoint(1, 5 * kEveryClocks);
  kill(getpid(), SIGINT);  // Ctrl-C: the launcher stops every daemon, servers checkpoint
  REQUIRE(stopped.Wait() == 130);
  CHECK(NoChildLeft());
  LaunchOptions resume = options;
  resume.resume_dir = options.out_dir;
  REQUIRE(RunJob(resume) == 0);
  const std::string summary = Read(options.out_dir + "/summary.json");
  CHECK(Field(summary, "resumed_from_clock") >= 5 * kEveryClocks);
  CHECK(NewestCheckpoints(resume.out_dir + "/checkpoints") ==
        NewestCheckpoints(whole.options().out_dir + "/checkpoints"));
  CHECK(Accuracy(resume) == Accuracy(whole.options()));
  // SSP and ASP cuts are each shard's own: a stopped job resumes from each
  // shard's newest checkpoint and finishes.
  for (const char* mode : {"ssp", "asp"}) {
    INFO("mode " << mode);
    LaunchOptions o = FaultOptions(std::string("resume-") + mode, mode);
    Job stopped_free(o);
    stopped_free.WaitForCheckpoint(0, 3 * kEveryClocks);
    stopped_free.WaitForCheckpoint(1, 3 * kEveryClocks);
    kill(getpid(), SIGINT);
    REQUIRE(stopped_free.Wait() == 130);
    o.resume_dir = o.out_dir;
    REQUIRE(RunJob(o) == 0);
    CHECK(Field(Read(o.out_dir + "/summary.json"), "resumed_from_clock") >= 3 * kEveryClocks);
    CHECK(Accuracy(o) > 0.9);
  }
  // A server pointed at another job's checkpoints exits 2 with one line
  // naming what differs, instead of starting over on top of them.
  const std::string err = TempDir("foreign-checkpoint.err");
  const std::string cmd = Runfile("server/tessera-server") + " --config " +
                          Runfile("configs/fashion_mnist_mlp.yaml") +
                          " --shard 0 --listen 127.0.0.1:0 --set name=another-job"
                          " --set data.dataset=synthetic --set 'model.layers=[784,32,10]'"
                          " --set checkpoint.dir=" +
                          options.out_dir + "/checkpoints 2> " + err;
  const int rc = std::system(cmd.c_str());
  CHECK(WIFEXITED(rc));
  CHECK(WEXITSTATUS(rc) == 2);
  CHECK(Read(err).find("the job name is fashion-mnist-mlp in the checkpoint but another-job in "
                       "this job") != std::string::npos);
  // Nothing to resume is a clear error, not a fresh start.
  LaunchOptions nothing = FaultOptions("resume-nothing", "bsp");
  fs::create_directories(nothing.out_dir);
  nothing.resume_dir = nothing.out_dir;
  CHECK(RunJob(nothing) == 2);
  CHECK(NoChildLeft());
}

}  // namespace
}  // namespace tessera
