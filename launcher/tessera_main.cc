// tessera: the command-line front end.
//
//   tessera run CONFIG [--set key=value ...] [--out DIR] [--no-live]
//               [--max-restarts N] [--resume DIR] [--token]
//       runs a whole job on this machine (see launcher/launcher.h)
//   tessera sweep CONFIG --grid key=v1,v2 [--grid ...] [--set ...] [--repeat N]
//               [--out DIR] [--target-accuracy A]
//       runs the job under every combination, tabulates and plots (launcher/sweep.h)
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

#include "absl/strings/numbers.h"
#include "common/flags.h"
#include "launcher/launcher.h"
#include "launcher/sweep.h"

namespace {

const char* kUsage =
    "usage: tessera run CONFIG [--set key=value ...] [--out DIR] [--no-live]\n"
    "       [--max-restarts N] [--resume DIR] [--token] [--server-binary PATH]\n"
    "       [--worker-binary PATH]\n"
    "  --token  every daemon requires a job token this run draws (written to OUT/token)\n"
    "usage: tessera sweep CONFIG --grid key=v1,v2,... [--grid ...] [--set key=value ...]\n"
    "       [--repeat N] [--out DIR] [--target-accuracy A] [--plot-script PATH]\n"
    "  every combination of the grids, N times each, one after another: DIR/results.csv,\n"
    "  DIR/report.md and plots (training.eval_every_steps makes the accuracy curves)\n";

int Usage(const std::string& error) {
  if (!error.empty()) std::fprintf(stderr, "tessera: %s\n", error.c_str());
  std::fprintf(stderr, "%s", kUsage);
  return 2;
}

std::string DefaultSweepDir() {
  char stamp[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&t));
  return std::string("sweeps/sweep-") + stamp;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tessera;
  auto flags = ParseFlags(argc, argv,
                          {"out", "server-binary", "worker-binary", "max-restarts", "resume",
                           "repeat", "target-accuracy", "plot-script"},
                          {"set", "grid"}, {"no-live", "token"});
  if (!flags.ok()) return Usage(std::string(flags.status().message()));
  const auto& args = flags->positional();
  if (args.size() != 2 || (args[0] != "run" && args[0] != "sweep")) return Usage("");
  LaunchOptions options;
  options.config_path = args[1];
  options.overrides = flags->All("set");
  options.out_dir = flags->Get("out");
  options.server_binary = flags->Get("server-binary");
  options.worker_binary = flags->Get("worker-binary");
  options.live = isatty(STDOUT_FILENO) && !flags->Has("no-live");
  options.resume_dir = flags->Get("resume");
  options.token = flags->Has("token");
  if (flags->Has("max-restarts")) {
    auto n = flags->GetInt("max-restarts", 1000);
    if (!n.ok() || !n->has_value()) {
      return Usage("--max-restarts '" + flags->Get("max-restarts") +
                   "': expected an integer in [0, 1000]");
    }
    options.max_restarts = static_cast<int>(**n);
  }
  if (args[0] == "run") {
    for (const char* sweep_only : {"grid", "repeat", "target-accuracy", "plot-script"}) {
      if (flags->Has(sweep_only))
        return Usage(std::string("--") + sweep_only + " is for tessera sweep");
    }
    if (!options.resume_dir.empty() && !options.out_dir.empty() &&
        options.out_dir != options.resume_dir) {
      return Usage("--resume DIR continues the run in DIR; drop --out");
    }
    return RunJob(options);
  }

  if (flags->Has("resume")) return Usage("--resume is for tessera run");
  SweepOptions sweep;
  sweep.job = options;
  if (sweep.job.out_dir.empty()) sweep.job.out_dir = DefaultSweepDir();
  sweep.live = options.live;
  for (const std::string& grid : flags->All("grid")) {
    auto parsed = ParseGrid(grid);
    if (!parsed.ok()) return Usage(std::string(parsed.status().message()));
    sweep.grid.push_back(*std::move(parsed));
  }
  if (flags->Has("repeat")) {
    auto n = flags->GetInt("repeat", 1000);
    if (!n.ok() || !n->has_value() || **n < 1) {
      return Usage("--repeat '" + flags->Get("repeat") + "': expected an integer in [1, 1000]");
    }
    sweep.repeat = static_cast<int>(**n);
  }
  if (flags->Has("target-accuracy")) {
    double target;
    if (!absl::SimpleAtod(flags->Get("target-accuracy"), &target) || !(target > 0 && target <= 1)) {
      return Usage("--target-accuracy '" + flags->Get("target-accuracy") +
                   "': expected a fraction in (0, 1]");
    }
    sweep.target_accuracy = target;
  }
  sweep.plot_script = flags->Get("plot-script");
  return RunSweep(sweep);
}
