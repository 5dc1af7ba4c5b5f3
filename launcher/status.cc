#include "launcher/status.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <limits>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/config.h"
#include "common/security.h"
#include "proto/health.grpc.pb.h"
#include "proto/tessera.grpc.pb.h"

namespace tessera {
namespace {

constexpr auto kDeadline = std::chrono::seconds(2);

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

struct ShardView {
  std::string address;
  std::string health = "UNREACHABLE";
  bool answered = false;
  std::string error;
  v1::StatsResponse stats;
};

ShardView Ask(const TransportSecurity& security, const std::string& address) {
  ShardView view;
  view.address = address;
  auto channel = security.Channel(address, 64 << 20, /*channel_id=*/0);
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + kDeadline);
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status s =
        grpc::health::v1::Health::NewStub(channel)->Check(&context, request, &response);
    if (s.ok()) {
      view.health = response.status() == grpc::health::v1::HealthCheckResponse::SERVING
                        ? "SERVING"
                        : "NOT_SERVING";
    }
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kDeadline);
  v1::StatsRequest request;
  grpc::Status s = v1::Shard::NewStub(channel)->Stats(&context, request, &view.stats);
  view.answered = s.ok();
  if (!s.ok()) view.error = s.error_message();
  return view;
}

// Every shard at once: with cluster.standbys, each shard's daemons, and
// the shard's view is the one serving workers (the standby, once it took
// over). *replicas (when not null): every daemon's view, by shard.
std::vector<ShardView> AskAll(const TransportSecurity& security, const JobConfig& config,
                              std::vector<std::vector<ShardView>>* replicas = nullptr) {
  std::vector<std::vector<std::future<ShardView>>> asks(config.cluster.servers.size());
  for (size_t s = 0; s < asks.size(); ++s) {
    asks[s].push_back(
        std::async(std::launch::async, Ask, std::cref(security), config.cluster.servers[s]));
    if (!config.cluster.standbys.empty()) {
      asks[s].push_back(
          std::async(std::launch::async, Ask, std::cref(security), config.cluster.standbys[s]));
    }
  }
  std::vector<ShardView> views;
  if (replicas != nullptr) replicas->assign(asks.size(), {});
  for (size_t s = 0; s < asks.size(); ++s) {
    std::vector<ShardView> daemons;
    for (auto& a : asks[s]) daemons.push_back(a.get());
    size_t serving = 0;
    for (size_t d = 0; d < daemons.size(); ++d) {
      if (daemons[d].answered && !daemons[d].stats.standby()) serving = d;
    }
    views.push_back(daemons[serving]);
    if (replicas != nullptr) (*replicas)[s] = std::move(daemons);
  }
  return views;
}

// With standbys: each daemon's role, term and mutation number, and a
// standby's lag behind the primary of its shard.
std::string Replicas(const std::vector<std::vector<ShardView>>& replicas) {
  std::string out = absl::StrFormat("\n%-6s%-22s%-10s%-8s%-10s%-6s%s\n", "SHARD", "ADDRESS",
                                    "ROLE", "TERM", "MUTATION", "LAG", "TOOK OVER");
  for (size_t s = 0; s < replicas.size(); ++s) {
    uint64_t primary_sequence = 0;
    for (const ShardView& v : replicas[s]) {
      if (v.answered && !v.stats.standby()) primary_sequence = v.stats.replication_sequence();
    }
    for (const ShardView& v : replicas[s]) {
      if (!v.answered) {
        absl::StrAppend(&out, absl::StrFormat("%-6d%-22s%-10s%s\n", s, v.address, "-",
                                              absl::StrCat("no answer: ", v.error)));
        continue;
      }
      const bool standby = v.stats.standby();
      const std::string lag =
          standby && primary_sequence >= v.stats.replication_sequence()
              ? absl::StrCat(primary_sequence - v.stats.replication_sequence())
              : "-";
      absl::StrAppend(&out, absl::StrFormat("%-6d%-22s%-10s%-8d%-10d%-6s%s\n", s, v.address,
                                            standby ? "standby" : "primary", v.stats.term(),
                                            v.stats.replication_sequence(), lag,
                                            v.stats.promotions() > 0 ? "yes" : "-"));
    }
  }
  return out;
}

uint64_t Pushes(const v1::StatsResponse& stats) {
  uint64_t n = 0;
  for (const v1::TableStats& t : stats.tables()) n += t.pushes();
  return n;
}

std::string Screen(const JobConfig& config, const std::vector<ShardView>& before,
                   const std::vector<ShardView>& now,
                   const std::vector<std::vector<ShardView>>& replicas, double interval_s) {
  const uint32_t workers = config.cluster.workers;
  std::string out;
  // The job line.
  int64_t min_clock = std::numeric_limits<int64_t>::max();
  uint64_t measured = 0, staleness_sum = 0;
  int answered = 0;
  for (const ShardView& v : now) {
    if (!v.answered) continue;
    ++answered;
    min_clock = std::min(min_clock, v.stats.min_clock());
    for (uint64_t c : v.stats.push_staleness_buckets()) measured += c;
    staleness_sum += v.stats.push_staleness_sum();
  }
  std::string mode = ModeName(config.consistency.mode);
  if (config.consistency.mode == ConsistencyMode::kSsp) {
    absl::StrAppend(&mode, " staleness ", config.consistency.staleness);
  }
  absl::StrAppend(&out, "job ", config.name, " (", mode, "): ", now.size(), " shards (", answered,
                  " answering), ", workers, " workers");
  if (answered > 0) {
    absl::StrAppend(&out, "; min clock ", min_clock, "; push staleness ",
                    measured > 0 ? absl::StrFormat("mean %.2f updates over %d pushes",
                                                   double(staleness_sum) / measured, measured)
                                 : std::string("not measured yet"));
  }
  out += "\n\n";

  // Shards.
  absl::StrAppend(&out, absl::StrFormat("%-6s%-22s%-13s%-8s%-10s%-10s%-10s%-8s%s\n", "SHARD",
                                        "ADDRESS", "HEALTH", "TABLES", "ROWS", "MIB", "PUSHES/S",
                                        "PARKED", "CHECKPOINT"));
  for (size_t s = 0; s < now.size(); ++s) {
    const ShardView& v = now[s];
    if (!v.answered) {
      absl::StrAppend(&out, absl::StrFormat("%-6d%-22s%-13s%s\n", s, v.address, v.health,
                                            absl::StrCat("no answer: ", v.error)));
      continue;
    }
    uint64_t rows = 0, values = 0;
    for (const v1::TableStats& t : v.stats.tables()) {
      rows += t.rows();
      values += t.values();
    }
    std::string rate = "-";
    if (before[s].answered && interval_s > 0) {
      rate = absl::StrFormat("%.1f", (double(Pushes(v.stats)) - double(Pushes(before[s].stats))) /
                                         interval_s);
    }
    std::string checkpoint = "none";
    if (v.stats.last_checkpoint_clock() >= 0) {
      checkpoint = absl::StrFormat("clock %d, %.0f s ago (%.2f s to write)",
                                   v.stats.last_checkpoint_clock(), v.stats.last_checkpoint_age_s(),
                                   v.stats.last_checkpoint_seconds());
    }
    absl::StrAppend(&out, absl::StrFormat("%-6d%-22s%-13s%-8d%-10d%-10.2f%-10s%-8d%s\n", s,
                                          v.address, v.health, v.stats.tables_size(), rows,
                                          values * 4 / 1048576.0, rate, v.stats.parked_pulls(),
                                          checkpoint));
  }
  if (!config.cluster.standbys.empty()) out += Replicas(replicas);
  if (answered == 0) return out;

  // Workers: each one's lowest clock over the shards, its freshest call.
  std::vector<int64_t> clock(workers, std::numeric_limits<int64_t>::max());
  std::vector<double> idle(workers, std::numeric_limits<double>::infinity());
  std::vector<bool> laggard(workers, false), evicted(workers, false);
  for (const ShardView& v : now) {
    if (!v.answered) continue;
    for (uint32_t w = 0; w < workers && w < uint32_t(v.stats.worker_clocks_size()); ++w) {
      clock[w] = std::min(clock[w], v.stats.worker_clocks(w));
    }
    for (uint32_t w = 0; w < workers && w < uint32_t(v.stats.worker_idle_s_size()); ++w) {
      idle[w] = std::min(idle[w], v.stats.worker_idle_s(w));
    }
    for (uint32_t w : v.stats.laggards()) {
      if (w < workers) laggard[w] = true;
    }
    for (uint32_t w : v.stats.evicted_workers()) {
      if (w < workers) evicted[w] = true;
    }
  }
  int64_t fastest = -1;
  for (int64_t c : clock) {
    if (c != std::numeric_limits<int64_t>::max()) fastest = std::max(fastest, c);
  }
  std::vector<std::string> laggards;
  for (uint32_t w = 0; w < workers; ++w) {
    if (laggard[w]) laggards.push_back(absl::StrCat(w));
  }
  // A worker may run this far past min_clock before its pulls wait.
  const bool asp = config.consistency.mode == ConsistencyMode::kAsp;
  const int64_t bound =
      config.consistency.mode == ConsistencyMode::kBsp ? 0 : config.consistency.staleness;
  absl::StrAppend(&out, "\n",
                  absl::StrFormat("%-8s%-8s%-8s%-12s%-14s%s\n", "WORKER", "CLOCK", "BEHIND",
                                  "STATE", "WAITING ON", "LAST SEEN"));
  for (uint32_t w = 0; w < workers; ++w) {
    if (clock[w] < 0 || clock[w] == std::numeric_limits<int64_t>::max()) {
      absl::StrAppend(&out, absl::StrFormat("%-8d%-8s%-8s%-12s%-14s%s\n", w, "-", "-",
                                            "unregistered", "-", "-"));
      continue;
    }
    std::string state = "training", waiting = "-";
    if (evicted[w]) {
      state = "evicted";
    } else if (!asp && clock[w] > min_clock + bound) {
      state = "waiting";
      waiting = laggards.empty() ? "-" : absl::StrJoin(laggards, ",");
    } else if (laggard[w] && !asp) {
      state = "at min";  // the others' pulls may wait for it
    }
    absl::StrAppend(&out, absl::StrFormat("%-8d%-8d%-8d%-12s%-14s%s\n", w, clock[w],
                                          fastest - clock[w], state, waiting,
                                          absl::StrFormat("%.1f s ago", idle[w])));
  }
  return out;
}

}  // namespace

int RunStatus(const StatusOptions& options) {
  absl::StatusOr<JobConfig> config = LoadJobConfig(options.config_path, options.overrides);
  if (!config.ok()) {
    std::fprintf(stderr, "tessera status: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  auto security = TransportSecurity::ForJob(*config);
  if (!security.ok()) {
    std::fprintf(stderr, "tessera status: %s\n", std::string(security.status().message()).c_str());
    return 2;
  }
  if (options.watch) {
    struct sigaction action {};
    action.sa_handler = OnSignal;
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);
  }
  std::vector<ShardView> before = AskAll(**security, *config);
  int code = 1;
  do {
    const auto start = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(options.interval_s));
    std::vector<std::vector<ShardView>> replicas;
    std::vector<ShardView> now = AskAll(**security, *config, &replicas);
    const double interval =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::string screen = Screen(*config, before, now, replicas, interval);
    if (options.watch) std::printf("\033[H\033[2J");
    std::printf("%s", screen.c_str());
    std::fflush(stdout);
    code = std::all_of(now.begin(), now.end(), [](const ShardView& v) { return v.answered; }) ? 0
                                                                                              : 1;
    before = std::move(now);
  } while (options.watch && !g_stop);
  return code;
}

}  // namespace tessera
