// tessera: the command-line front end (`tessera --help` lists everything).
//
//   tessera run CONFIG [--set key=value ...] [--out DIR] [--no-live]
//               [--max-restarts N] [--resume DIR] [--open]
//       runs a whole job on this machine (see launcher/launcher.h)
//   tessera sweep CONFIG --grid key=v1,v2 [--grid ...] [--set ...] [--repeat N]
//               [--out DIR] [--target-accuracy A]
//       runs the job under every combination, tabulates and plots (launcher/sweep.h)
//   tessera status --config CONFIG [--set ...] [--watch] [--interval S]
//       one screen about a running job (launcher/status.h)
//   tessera net cut|heal DIR HOST [PEER]
//       takes one host's link of an emulated job down or up, or with PEER only the path
//       between the two (launcher/emulated_network.h)
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

#include "absl/strings/numbers.h"
#include "common/config.h"
#include "common/flags.h"
#include "launcher/emulated_network.h"
#include "launcher/launcher.h"
#include "launcher/status.h"
#include "launcher/sweep.h"

namespace {

const tessera::Program kProgram{
    "tessera",
    "run CONFIG [flags] | sweep CONFIG --grid key=v1,v2 [flags] | status --config CONFIG [--watch]"
    " | net cut|heal DIR HOST [PEER] | net up DIR RATE HOST...",
    "subcommands:\n"
    "  run CONFIG      runs a whole job on this machine: its servers and workers, restarted\n"
    "                  when they die, a live progress line, DIR/summary.json at the end\n"
    "  sweep CONFIG    runs the job under every combination of the --grid values, --repeat\n"
    "                  times each: DIR/results.csv, DIR/report.md and plots\n"
    "  status          one screen about a running job, from every shard's Stats and health:\n"
    "                  shards, workers (clock, how far behind, waiting on whom), staleness;\n"
    "                  exit 0 when every shard answers, 1 otherwise\n"
    "  net cut DIR HOST [PEER], net heal DIR HOST [PEER]\n"
    "                  takes HOST's link (server-0, worker-1, ...) of the emulated job whose\n"
    "                  output folder is DIR down (a partition) or up again; with PEER, only\n"
    "                  the path between HOST and PEER (each still reaches every other host)\n"
    "  net up DIR RATE HOST...\n"
    "                  makes an emulated network of these hosts (links of RATE each way),\n"
    "                  writes DIR/network.json (each host's namespace and address) and holds\n"
    "                  it until interrupted; run programs on a host with ip netns exec NS",
    {{"set", "KEY=VALUE", "override a config key for every daemon", tessera::FlagKind::kRepeatable},
     {"out", "DIR", "run/sweep: the output folder (default: runs/<job>-<time>, sweeps/sweep-<time>)"},
     {"no-live", "", "run/sweep: print progress lines instead of rewriting one",
      tessera::FlagKind::kSwitch},
     {"max-restarts", "N", "run: restarts allowed per daemon (default 3)"},
     {"replicas", "N", "run: 1 = a standby per shard and failover through etcd (default 0)"},
     {"resume", "DIR", "run: continue the stopped job in DIR from its checkpoints"},
     {"emulate-network", "RATE",
      "run/sweep: every daemon on a host of its own, links shaped to RATE each way (100mbit,\n"
      "      1gbit; as --set emulation.link_rate=RATE; needs CAP_NET_ADMIN)"},
     {"token", "",
      "run/sweep: every daemon requires a job token drawn now (written to DIR/token); the default",
      tessera::FlagKind::kSwitch},
     {"open", "",
      "run/sweep: no job token: whoever reaches the ports may call (register a rank, push,\n"
      "      end the job); for a machine no one else can reach",
      tessera::FlagKind::kSwitch},
     {"no-metrics", "", "run/sweep: no GET /metrics on the daemons (default: free ports, printed)",
      tessera::FlagKind::kSwitch},
     {"server-binary", "PATH", "run/sweep: tessera-server to start (default: next to tessera)"},
     {"worker-binary", "PATH", "run/sweep: tessera-worker to start (default: next to tessera)"},
     {"grid", "KEY=V1,V2", "sweep: values of one config key (commas inside [] stay)",
      tessera::FlagKind::kRepeatable},
     {"repeat", "N", "sweep: runs of each combination (default 1)"},
     {"target-accuracy", "A", "sweep: report the seconds each run took to reach it"},
     {"plot-script", "PATH", "sweep: the plotting script (default: scripts/sweep_plots.py)"},
     {"config", "FILE", "status: the job's YAML (its servers, TLS and token settings)"},
     {"watch", "", "status: refresh every --interval seconds until interrupted",
      tessera::FlagKind::kSwitch},
     {"interval", "SECONDS", "status: between the two Stats calls that make pushes/s (default 1)"}}};

int Usage(const std::string& error) {
  if (!error.empty()) std::fprintf(stderr, "tessera: %s\n", error.c_str());
  std::fprintf(stderr, "%s", tessera::Usage(kProgram).c_str());
  return 2;
}

std::string DefaultSweepDir() {
  char stamp[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&t));
  return std::string("sweeps/sweep-") + stamp;
}

// tessera status: only its own flags.
int Status(const tessera::Flags& flags) {
  for (const char* other : {"out", "no-live", "max-restarts", "resume", "token", "open", "no-metrics",
                            "replicas",
                            "emulate-network",
                            "server-binary", "worker-binary", "grid", "repeat",
                            "target-accuracy", "plot-script"}) {
    if (flags.Has(other)) return Usage(std::string("--") + other + " is not for tessera status");
  }
  if (!flags.Has("config")) return Usage("tessera status needs --config CONFIG");
  tessera::StatusOptions options;
  options.config_path = flags.Get("config");
  options.overrides = flags.All("set");
  options.watch = flags.Has("watch");
  if (flags.Has("interval")) {
    double interval;
    if (!absl::SimpleAtod(flags.Get("interval"), &interval) || !(interval >= 0.1 && interval <= 3600)) {
      return Usage("--interval '" + flags.Get("interval") + "': expected seconds in [0.1, 3600]");
    }
    options.interval_s = interval;
  }
  return tessera::RunStatus(options);
}

// tessera net up DIR RATE HOST...: an emulated network held until a signal.
int NetUp(const std::vector<std::string>& args) {
  absl::StatusOr<uint64_t> rate =
      args[3] == "unshaped" ? 0 : tessera::ParseLinkRate("RATE", args[3]);
  if (!rate.ok()) return Usage(std::string(rate.status().message()));
  tessera::EmulatedNetwork::RemoveStale();
  const std::vector<std::string> hosts(args.begin() + 4, args.end());
  auto net = tessera::EmulatedNetwork::Create("tessera-" + std::to_string(getpid()), hosts,
                                              {*rate, 0});
  absl::Status s = net.status();
  if (s.ok()) s = (*net)->WriteDescription(args[2] + "/network.json");
  if (!s.ok()) {
    std::fprintf(stderr, "tessera net: %s\n", std::string(s.message()).c_str());
    return absl::IsFailedPrecondition(s) ? 2 : 1;
  }
  for (size_t h = 0; h < hosts.size(); ++h) {
    std::printf("%s\t%s\t%s\n", hosts[h].c_str(), (*net)->Namespace(h).c_str(),
                (*net)->Address(h).c_str());
  }
  std::fflush(stdout);
  sigset_t wanted;
  sigemptyset(&wanted);
  sigaddset(&wanted, SIGINT);
  sigaddset(&wanted, SIGTERM);
  sigprocmask(SIG_BLOCK, &wanted, nullptr);
  int sig = 0;
  sigwait(&wanted, &sig);  // then the network is removed
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tessera;
  if (auto exit = AnswerHelpOrVersion(argc, argv, kProgram)) return *exit;
  auto flags = ParseFlags(argc, argv, kProgram);
  if (!flags.ok()) return Usage(std::string(flags.status().message()));
  const auto& args = flags->positional();
  if (args.size() == 1 && args[0] == "status") return Status(*flags);
  if (args.size() >= 5 && args[0] == "net" && args[1] == "up") return NetUp(args);
  if (!args.empty() && args[0] == "net") {
    if (args.size() < 4 || args.size() > 5 || (args[1] != "cut" && args[1] != "heal")) {
      return Usage(
          "expected: tessera net cut|heal DIR HOST [PEER], or tessera net up DIR RATE HOST...");
    }
    absl::Status s = EmulatedNetwork::SetLinkOf(args[2] + "/network.json", args[3],
                                                /*up=*/args[1] == "heal",
                                                args.size() == 5 ? args[4] : "");
    if (!s.ok()) {
      std::fprintf(stderr, "tessera net: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    return 0;
  }
  for (const char* status_only : {"config", "watch", "interval"}) {
    if (flags->Has(status_only)) return Usage(std::string("--") + status_only + " is for tessera status");
  }
  if (args.size() != 2 || (args[0] != "run" && args[0] != "sweep")) return Usage("");
  LaunchOptions options;
  options.config_path = args[1];
  options.overrides = flags->All("set");
  if (flags->Has("emulate-network")) {
    options.overrides.push_back("emulation.link_rate=" + flags->Get("emulate-network"));
  }
  options.out_dir = flags->Get("out");
  options.server_binary = flags->Get("server-binary");
  options.worker_binary = flags->Get("worker-binary");
  options.live = isatty(STDOUT_FILENO) && !flags->Has("no-live");
  options.resume_dir = flags->Get("resume");
  if (flags->Has("token") && flags->Has("open")) return Usage("--token and --open contradict");
  options.token = !flags->Has("open");
  options.metrics = !flags->Has("no-metrics");
  if (flags->Has("replicas")) {
    auto n = flags->GetInt("replicas", 1);
    if (!n.ok() || !n->has_value()) {
      return Usage("--replicas '" + flags->Get("replicas") +
                   "': expected 0 or 1 (a standby per shard)");
    }
    options.replicas = static_cast<int>(**n);
  }
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
