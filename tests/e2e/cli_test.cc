// Every binary explains itself: --help prints its usage with every flag and
// exits 0, --version names the build and exits 0, a misspelled flag exits 2
// naming it; `tessera` lists its subcommands.
#include <sys/stat.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <string>

#include "e2e_fixtures.h"

namespace tessera {
namespace {

// Runs `command`; its stdout and stderr, and its exit status in *status.
std::string Capture(const std::string& command, int* status) {
  return Shell(command + " 2>&1", status);
}

struct Binary {
  const char* path;
  const char* name;
  std::vector<const char*> flags;  // some it must list
};

TEST_CASE("every binary answers --help and --version, and refuses a misspelled flag") {
  const std::vector<Binary> binaries = {
      {"launcher/tessera", "tessera", {"--set", "--grid", "--watch", "--no-metrics", "--resume"}},
      {"server/tessera-server", "tessera-server", {"--config", "--shard", "--listen", "--set"}},
      {"worker/tessera-worker", "tessera-worker", {"--config", "--rank", "--standalone", "--result"}},
      {"bench/ps_bench", "ps_bench", {"--server", "--channels", "--encoding"}},
      {"bench/worker_bench", "worker_bench", {"--batch", "--steps"}},
      {"bench/checkpoint_bench", "checkpoint_bench", {"--floats", "--drop-caches"}},
      {"bench/abuse_bench", "abuse_bench", {"--mode", "--pid"}},
      {"bench/metrics_bench", "metrics_bench", {"--pairs"}},
  };
  for (const Binary& b : binaries) {
    INFO(b.name);
    const std::string path = Runfile(b.path);
    int status;
    const std::string help = Capture(path + " --help", &status);
    INFO(help);
    CHECK(status == 0);
    CHECK(help.find(std::string("usage: ") + b.name) == 0);
    for (const char* flag : b.flags) CHECK(help.find(flag) != std::string::npos);
    CHECK(help.find("--version") != std::string::npos);

    const std::string version = Capture(path + " --version", &status);
    CHECK(status == 0);
    CHECK(version.find(std::string(b.name) + " 0.") == 0);
    CHECK((version.find("CPU-only build") != std::string::npos ||
           version.find("CUDA build") != std::string::npos));

    const std::string typo = Capture(path + " --confgi x", &status);
    CHECK(status == 2);
    CHECK(typo.find("--confgi") != std::string::npos);
  }
  int status;
  const std::string usage = Capture(Runfile("launcher/tessera") + " --help", &status);
  for (const char* sub : {"run CONFIG", "sweep CONFIG", "status"}) {
    CHECK(usage.find(sub) != std::string::npos);
  }
}

TEST_CASE("tessera run from the command line: --token draws one, --open none, not both") {
  const std::string base = Runfile("launcher/tessera") + " run " +
                           Runfile("configs/fashion_mnist_mlp.yaml") +
                           " --no-live --server-binary " + Runfile("server/tessera-server") +
                           " --worker-binary " + Runfile("worker/tessera-worker") +
                           " --set data.dataset=synthetic --set data.synthetic_train=2048"
                           " --set data.synthetic_test=512 --set 'model.layers=[784,16,10]'"
                           " --set training.epochs=1";
  int status;
  const std::string closed = TempDir("cli-token");
  std::string out = Capture(base + " --token --out " + closed, &status);
  INFO(out);
  CHECK(status == 0);
  const nlohmann::json cluster = Json(Read(closed + "/cluster.json"));
  CHECK(cluster["token_file"] == closed + "/token");
  struct stat st {};
  REQUIRE(stat((closed + "/token").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(Read(closed + "/token").size() >= 32);

  const std::string open = TempDir("cli-open");
  out = Capture(base + " --open --out " + open, &status);
  CHECK(status == 0);
  CHECK(Json(Read(open + "/cluster.json"))["token_file"] == "");
  CHECK(stat((open + "/token").c_str(), &st) != 0);

  out = Capture(base + " --token --open --out " + TempDir("cli-both"), &status);
  CHECK(status == 2);
  CHECK(out.find("--token and --open contradict") != std::string::npos);
  out = Capture(base + " --max-restarts -1 --out " + TempDir("cli-restarts"), &status);
  CHECK(status == 2);
  CHECK(out.find("--max-restarts '-1': expected an integer in [0, 1000]") != std::string::npos);
}

}  // namespace
}  // namespace tessera
