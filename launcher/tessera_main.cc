// tessera: the command-line front end.
//
//   tessera run CONFIG [--set key=value ...] [--out DIR] [--no-live]
//               [--max-restarts N] [--resume DIR] [--token]
//       runs a whole job on this machine (see launcher/launcher.h)
#include <unistd.h>

#include <cstdio>
#include <string>

#include "common/flags.h"
#include "launcher/launcher.h"

int main(int argc, char** argv) {
  using namespace tessera;
  const char* usage =
      "usage: tessera run CONFIG [--set key=value ...] [--out DIR] [--no-live]\n"
      "       [--max-restarts N] [--resume DIR] [--token] [--server-binary PATH]\n"
      "       [--worker-binary PATH]\n"
      "  --token  every daemon requires a job token this run draws (written to OUT/token)\n";
  auto flags = ParseFlags(argc, argv,
                          {"out", "server-binary", "worker-binary", "max-restarts", "resume"},
                          {"set"}, {"no-live", "token"});
  if (!flags.ok()) {
    std::fprintf(stderr, "tessera: %s\n%s", std::string(flags.status().message()).c_str(), usage);
    return 2;
  }
  const auto& args = flags->positional();
  if (args.size() != 2 || args[0] != "run") {
    std::fprintf(stderr, "%s", usage);
    return 2;
  }
  LaunchOptions options;
  options.config_path = args[1];
  options.overrides = flags->All("set");
  options.out_dir = flags->Get("out");
  options.server_binary = flags->Get("server-binary");
  options.worker_binary = flags->Get("worker-binary");
  options.live = isatty(STDOUT_FILENO) && !flags->Has("no-live");
  options.resume_dir = flags->Get("resume");
  options.token = flags->Has("token");
  if (!options.resume_dir.empty() && !options.out_dir.empty() && options.out_dir != options.resume_dir) {
    std::fprintf(stderr, "tessera: --resume DIR continues the run in DIR; drop --out\n");
    return 2;
  }
  if (flags->Has("max-restarts")) {
    auto n = flags->GetInt("max-restarts", 1000);
    if (!n.ok() || !n->has_value()) {
      std::fprintf(stderr, "tessera: --max-restarts '%s': expected an integer in [0, 1000]\n",
                   flags->Get("max-restarts").c_str());
      return 2;
    }
    options.max_restarts = static_cast<int>(**n);
  }
  return RunJob(options);
}
