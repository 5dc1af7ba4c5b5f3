// ps_bench: throughput and latency of one running shard over gRPC.
//
//   ps_bench --config configs/bench.yaml --server 127.0.0.1:50071 [--channels N]
//            [--repeats 20] [--sparse-keys 10000000] [--optimizer-values 16777216]
//            [--seed 42]
//
// Channels default to the config's worker.channels_per_shard.
// Measures, against a tessera-server started from the same config:
//   dense pull and push of 4 KiB ... 64 MiB (table "dense"), each transfer
//     split into pieces of at least 1 MiB spread over the channels at once;
//     with --encoding bf16 the values travel as bfloat16 (sizes and GB/s stay
//     in float32 bytes; the client's encoding and decoding are timed);
//   sparse push of N fresh keys (rows created and updated on the server),
//     then pull of the same keys (table "sparse", dim 1), in requests of
//     --keys-per-request keys (250,000: small enough to pipeline over the
//     channels, large enough to amortize a call), all sent at once; keys are
//     drawn from --seed, so a second run with the same seed updates rows
//     the first created. Before the first round the same pushes go once,
//     untimed, to the table "sparse-warm-up", so the server is warm (heap,
//     buffers) as after any first step; --cold skips that. Rows created are
//     reported per round (round 1 fills the empty table, later rounds add
//     to it); pull and update as p50/p99 over the rounds;
//   the server's optimizer (config's) applied in-process on one core;
//   with --only sparse-local, the sparse table alone in this process; with
//   --only memory, what first touch of fresh memory costs here.
// Prints one line per case: bytes, p50/p99 latency, throughput at p50.
#include <grpcpp/grpcpp.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "common/codec.h"
#include "common/allocator.h"
#include "common/config.h"
#include "common/flags.h"
#include "common/huge_page_arena.h"
#include "common/secret.h"
#include "common/security.h"
#include "common/transport.h"
#include "common/wire.h"
#include "proto/tessera.grpc.pb.h"
#include "server/optimizer.h"
#include "server/sparse_table.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

// The bench's registration secret as worker 0 (RegisterRequest.session).
std::string g_session;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Several channels (HTTP/2 connections) to one shard; requests go round-robin.
class Connection {
 public:
  Connection(const std::string& address, int channels, int64_t max_bytes,
             const TransportSecurity& security) {
    for (int i = 0; i < channels; ++i) {
      stubs_.push_back(v1::Shard::NewStub(security.Channel(address, max_bytes, i)));
    }
  }
  v1::Shard::Stub* stub(size_t i) { return stubs_[i % stubs_.size()].get(); }
  size_t size() const { return stubs_.size(); }

 private:
  std::vector<std::unique_ptr<v1::Shard::Stub>> stubs_;
};

grpc::Status SyncCall(v1::Shard::Stub* stub, grpc::ClientContext* ctx, const v1::PullRequest& r,
                      v1::PullResponse* resp) {
  return stub->Pull(ctx, r, resp);
}
grpc::Status SyncCall(v1::Shard::Stub* stub, grpc::ClientContext* ctx, const v1::PushRequest& r,
                      v1::PushResponse* resp) {
  return stub->Push(ctx, r, resp);
}

bool g_sync = false;  // --sync: blocking stubs, one thread per request

// Sends every request at once (callback API, or blocking calls on threads
// with --sync) and waits for all of them.
template <typename Req, typename Resp, typename Call>
bool FanOut(Connection& conn, std::vector<Req>& requests, std::vector<Resp>& responses, Call call) {
  if (g_sync) {
    responses.assign(requests.size(), Resp());
    std::atomic<bool> ok{true};
    std::vector<std::thread> threads;
    for (size_t i = 0; i < requests.size(); ++i) {
      threads.emplace_back([&, i] {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
        grpc::Status s = SyncCall(conn.stub(i), &ctx, requests[i], &responses[i]);
        if (!s.ok()) ok = false;
      });
    }
    for (auto& t : threads) t.join();
    return ok;
  }
  responses.assign(requests.size(), Resp());
  std::vector<grpc::ClientContext> contexts(requests.size());
  absl::BlockingCounter done(static_cast<int>(requests.size()));
  std::atomic<bool> ok{true};
  for (size_t i = 0; i < requests.size(); ++i) {
    contexts[i].set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    call(conn.stub(i), &contexts[i], &requests[i], &responses[i], [&](grpc::Status s) {
      if (!s.ok()) {
        std::fprintf(stderr, "ps_bench: %s\n", s.error_message().c_str());
        ok = false;
      }
      done.DecrementCount();
    });
  }
  done.Wait();
  return ok;
}

struct Timing {
  double p50, p99;
};

Timing Percentiles(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  auto at = [&](double q) { return t[std::min(t.size() - 1, size_t(q * (t.size() - 1) + 0.5))]; };
  return {at(0.5), at(0.99)};
}

void Report(const std::string& what, double bytes, const std::vector<double>& times,
            const std::string& extra = "") {
  Timing t = Percentiles(times);
  std::printf("%-34s %12.0f bytes  p50 %9.3f ms  p99 %9.3f ms  %8.2f GB/s%s\n", what.c_str(), bytes,
              t.p50 * 1e3, t.p99 * 1e3, bytes / t.p50 / 1e9, extra.c_str());
  std::fflush(stdout);
}

// Dense requests for [0, floats), in pieces of >= 1 MiB, at most one per channel.
std::vector<std::pair<uint64_t, uint64_t>> Pieces(uint64_t floats, size_t channels) {
  const uint64_t min_piece = (1 << 20) / sizeof(float);
  uint64_t n = std::max<uint64_t>(1, std::min<uint64_t>(channels, floats / min_piece));
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (uint64_t i = 0; i < n; ++i)
    out.emplace_back(floats * i / n, floats * (i + 1) / n - floats * i / n);
  return out;
}

// With `bf16`, values travel as bfloat16 and the timings include what a
// client does for it: encoding the gradients before a push, decoding the
// values after a pull (float32 sends the bytes as they are).
bool BenchDense(Connection& conn, int repeats, int64_t* clock, uint64_t max_bytes,
                v1::Codec codec_id) {
  const Codec& codec = CodecOf(codec_id);
  const bool bf16 = codec_id != v1::FLOAT32;  // values are encoded and decoded
  for (uint64_t bytes = 4096; bytes <= max_bytes; bytes *= 4) {
    const uint64_t floats = bytes / sizeof(float);
    auto pieces = Pieces(floats, conn.size());
    std::vector<v1::PullRequest> pulls(pieces.size());
    std::vector<v1::PushRequest> pushes(pieces.size());
    std::vector<float> grad(floats, 1e-3f), pulled(floats);
    auto encode = [&] {
      for (size_t i = 0; i < pieces.size(); ++i) {
        const auto values = absl::MakeConstSpan(grad.data() + pieces[i].first, pieces[i].second);
        codec.Encode(values, pushes[i].mutable_gradients(0));
      }
    };
    for (size_t i = 0; i < pieces.size(); ++i) {
      auto* s = pulls[i].add_slices();
      s->set_table("dense");
      s->set_offset(pieces[i].first);
      s->set_length(pieces[i].second);
      s->set_codec(codec_id);
      pulls[i].set_session(g_session);
      pushes[i].set_session(g_session);
      *pushes[i].add_slices() = *s;
      pushes[i].add_gradients();
    }
    encode();
    std::vector<double> pull_times, push_times;
    std::vector<v1::PullResponse> pull_resp;
    std::vector<v1::PushResponse> push_resp;
    for (int r = 0; r < repeats + 1; ++r) {
      auto t0 = Clock::now();
      if (!FanOut(conn, pulls, pull_resp,
                  [](auto* stub, auto* ctx, auto* req, auto* resp, auto cb) {
                    stub->async()->Pull(ctx, req, resp, cb);
                  })) {
        return false;
      }
      if (bf16) {
        for (size_t i = 0; i < pieces.size(); ++i) {
          (void)codec.Decode(pull_resp[i].values(0),
                             absl::MakeSpan(pulled.data() + pieces[i].first, pieces[i].second));
        }
      }
      auto t1 = Clock::now();
      if (bf16) encode();
      for (auto& p : pushes) p.set_clock(*clock);
      if (!FanOut(conn, pushes, push_resp,
                  [](auto* stub, auto* ctx, auto* req, auto* resp, auto cb) {
                    stub->async()->Push(ctx, req, resp, cb);
                  })) {
        return false;
      }
      auto t2 = Clock::now();
      if (r == 0) continue;  // warm-up: connections, allocator
      pull_times.push_back(Seconds(t1 - t0));
      push_times.push_back(Seconds(t2 - t1));
    }
    std::string tag =
        bytes >= (1 << 20) ? absl::StrCat(bytes >> 20, " MiB") : absl::StrCat(bytes >> 10, " KiB");
    std::string pieces_note = absl::StrCat("  (", pieces.size(), " request",
                                           pieces.size() > 1 ? "s" : "",
                                           bf16 ? absl::StrCat(", ", v1::Codec_Name(codec_id)) : "",
                                           ")");
    Report("dense pull " + tag, double(bytes), pull_times, pieces_note);
    Report("dense push " + tag + " (adam)", double(bytes), push_times, pieces_note);
  }
  return true;
}

bool BenchSparse(Connection& conn, uint64_t num_keys, int repeats, int64_t clock,
                 uint64_t kPerRequest, uint64_t seed, bool warm_up) {
  std::vector<double> push_times, pull_times, update_times;
  std::mt19937_64 rng(seed);
  for (int r = 0; r < repeats; ++r) {
    // Fresh random keys each round, so every push creates its rows.
    std::vector<uint64_t> keys(num_keys);
    for (auto& k : keys) k = rng();
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    std::vector<v1::PushRequest> pushes;
    std::vector<v1::PullRequest> pulls;
    std::vector<float> grad(kPerRequest, 1e-3f);
    for (uint64_t b = 0; b < keys.size(); b += kPerRequest) {
      uint64_t n = std::min<uint64_t>(kPerRequest, keys.size() - b);
      v1::Slice slice;
      slice.set_table("sparse");
      EncodeKeys(absl::MakeConstSpan(keys.data() + b, n), slice.mutable_keys());
      pushes.emplace_back();
      pushes.back().set_clock(clock);
      pushes.back().set_session(g_session);
      *pushes.back().add_slices() = slice;
      EncodeFloats(absl::MakeConstSpan(grad.data(), n), pushes.back().add_gradients());
      pulls.emplace_back();
      pulls.back().set_session(g_session);
      *pulls.back().add_slices() = slice;
    }
    std::vector<v1::PushResponse> push_resp;
    std::vector<v1::PullResponse> pull_resp;
    auto push = [](auto* stub, auto* ctx, auto* req, auto* resp, auto cb) {
      stub->async()->Push(ctx, req, resp, cb);
    };
    // Warm-up, before the first round: the same requests, creating their
    // rows in a second table ("sparse-warm-up", same shape), so that both
    // processes' transfer buffers and heaps are warm, as on a server that
    // has been serving; the measured table is still empty.
    if (warm_up && r == 0) {
      for (auto& p : pushes) p.mutable_slices(0)->set_table("sparse-warm-up");
      if (!FanOut(conn, pushes, push_resp, push)) return false;
      for (auto& p : pushes) p.mutable_slices(0)->set_table("sparse");
    }
    auto t0 = Clock::now();
    if (!FanOut(conn, pushes, push_resp, push)) return false;
    auto t1 = Clock::now();
    if (!FanOut(conn, pulls, pull_resp, [](auto* stub, auto* ctx, auto* req, auto* resp, auto cb) {
          stub->async()->Pull(ctx, req, resp, cb);
        })) {
      return false;
    }
    auto t2 = Clock::now();
    if (!FanOut(conn, pushes, push_resp, push)) return false;
    auto t3 = Clock::now();
    push_times.push_back(Seconds(t1 - t0));
    pull_times.push_back(Seconds(t2 - t1));
    update_times.push_back(Seconds(t3 - t2));
  }
  const double pair_bytes = double(num_keys) * (sizeof(uint64_t) + sizeof(float));
  std::string note = absl::StrCat("  (", num_keys, " keys, ",
                                  (num_keys + kPerRequest - 1) / kPerRequest, " requests)");
  // Creation depends on what the table already holds: one line per round.
  for (int r = 0; r < repeats; ++r) {
    Report(absl::StrCat("sparse push, rows created, round ", r + 1), pair_bytes, {push_times[r]},
           absl::StrCat(note, ", table held ", r * num_keys, " rows",
                        r == 0 ? (warm_up ? ", server warm" : ", server cold") : ""));
  }
  Report("sparse pull", pair_bytes, pull_times, note);
  Report("sparse push, rows updated", pair_bytes, update_times, note);
  return true;
}

// The sparse table alone, in this process: what the shard's storage costs
// without the network. Same keys and batches as BenchSparse.
void BenchSparseLocal(const JobConfig& config, uint64_t num_keys, uint64_t kPerRequest,
                      uint64_t seed) {
  auto opt = MakeOptimizer(config.optimizer);
  TableConfig table_config;
  table_config.name = "sparse";
  table_config.kind = TableKind::kSparse;
  table_config.dim = 1;
  for (const TableConfig& t : config.Tables()) {
    if (t.name == "sparse") table_config.reserve_rows = t.reserve_rows;
  }
  auto reserve_start = Clock::now();
  SparseTable table(table_config, opt.get(), config.server.sparse_stripes,
                    table_config.reserve_rows);
  const double reserve = Seconds(Clock::now() - reserve_start);
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> keys(num_keys);
  for (auto& k : keys) k = rng();
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  std::vector<float> grad(kPerRequest, 1e-3f), out(kPerRequest);
  auto each_batch = [&](auto fn) {
    auto t0 = Clock::now();
    for (uint64_t b = 0; b < keys.size(); b += kPerRequest) {
      uint64_t n = std::min<uint64_t>(kPerRequest, keys.size() - b);
      fn(absl::MakeConstSpan(keys.data() + b, n));
    }
    return Seconds(Clock::now() - t0);
  };
  double create =
      each_batch([&](auto k) { table.Apply(k, absl::MakeConstSpan(grad.data(), k.size()), 1.0f); });
  double read = each_batch([&](auto k) { table.Read(k, absl::MakeSpan(out.data(), k.size())); });
  double update =
      each_batch([&](auto k) { table.Apply(k, absl::MakeConstSpan(grad.data(), k.size()), 1.0f); });
  std::printf(
      "sparse table in process, %llu keys in batches of %llu: create+apply %.3f s, "
      "read %.3f s, update %.3f s (one thread; %llu rows reserved in %.3f s)\n",
      (unsigned long long)keys.size(), (unsigned long long)kPerRequest, create, read, update,
      (unsigned long long)table_config.reserve_rows, reserve);
}

// What first touch of fresh memory costs on this machine, 4 KiB pages against
// the huge pages the sparse tables use (HugePageArena): creating rows is
// bound by it on VMs where every page fault traps to the hypervisor.
void BenchFreshMemory() {
  const size_t bytes = size_t{256} << 20;
  auto touch = [&](char* p) {
    auto t0 = Clock::now();
    for (size_t i = 0; i < bytes; i += 4096) p[i] = 1;
    return Seconds(Clock::now() - t0);
  };
  void* small = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (small == MAP_FAILED) return;
  const double small_s = touch(static_cast<char*>(small));
  munmap(small, bytes);
  HugePageArena arena;
  void* huge = arena.Allocate(bytes);
  const double huge_s = touch(static_cast<char*>(huge));
  arena.Free(huge, bytes);
  std::printf("fresh memory, first touch of 256 MiB: 4 KiB pages %.3f s, huge pages %.3f s\n",
              small_s, huge_s);
}

void BenchOptimizer(const OptimizerConfig& config, uint64_t n, int repeats) {
  auto opt = MakeOptimizer(config);
  std::vector<float> w(n, 0.5f), g(n, 1e-3f), slots(n * opt->num_slots());
  opt->InitSlots(absl::MakeSpan(slots));
  std::vector<double> times;
  for (int r = 0; r <= repeats; ++r) {
    auto t0 = Clock::now();
    opt->Apply(w.data(), g.data(), slots.data(), n, n, r + 1, 1.0f, 1.0f);
    if (r > 0) times.push_back(Seconds(Clock::now() - t0));
  }
  Timing t = Percentiles(times);
  // Bytes moved: w, slots read and written, g read.
  double bytes = double(n) * sizeof(float) * (2 + 2 * opt->num_slots() + 1);
  std::printf("%-34s %12llu values p50 %9.3f ms  p99 %9.3f ms  %8.2f G values/s  (%.1f GB/s)\n",
              (std::string("optimizer ") + NameOf(config.type) + ", one core").c_str(),
              (unsigned long long)n, t.p50 * 1e3, t.p99 * 1e3, n / t.p50 / 1e9,
              bytes / t.p50 / 1e9);
}

const Program kProgram{
    "ps_bench",
    "--config configs/bench.yaml [--server HOST:PORT] [flags]",
    "Throughput and latency of one running shard over gRPC (start one first:\n"
    "tessera-server --config configs/bench.yaml --shard 0). One line per case.",
    {{"config", "FILE", "the shard's job YAML (default configs/bench.yaml)"},
     {"set", "KEY=VALUE", "override a config key", FlagKind::kRepeatable},
     {"server", "HOST:PORT", "the shard (default: cluster.servers[0])"},
     {"channels", "N", "gRPC channels (default: worker.channels_per_shard)"},
     {"repeats", "N", "rounds of each dense size (default 20)"},
     {"max-bytes", "B", "largest dense transfer (default 64 MiB)"},
     {"encoding", "fp32|bf16|fp16", "values on the wire (default fp32)"},
     {"sparse-keys", "N", "fresh keys a sparse round pushes"},
     {"sparse-repeats", "N", "sparse rounds"},
     {"keys-per-request", "N", "keys per sparse request (default 250000)"},
     {"optimizer-values", "N", "values the in-process optimizer case updates"},
     {"only", "CASE", "dense, sparse, sparse-local, optimizer or memory"},
     {"seed", "N", "draws the sparse keys"},
     {"sync", "", "synchronous gRPC calls instead of the callback API", FlagKind::kSwitch},
     {"cold", "", "skip the untimed sparse warm-up round", FlagKind::kSwitch}}};

int Main(int argc, char** argv) {
  ConfigureAllocatorForLargeTransfers();
  if (auto exit = AnswerHelpOrVersion(argc, argv, kProgram)) return *exit;
  auto flags = ParseFlags(argc, argv, kProgram);
  g_sync = flags.ok() && flags->Has("sync");
  if (!flags.ok())
    return std::fprintf(stderr, "ps_bench: %s\n", flags.status().ToString().c_str()), 2;
  auto config = LoadJobConfig(flags->Has("config") ? flags->Get("config") : "configs/bench.yaml",
                              flags->All("set"));
  if (!config.ok())
    return std::fprintf(stderr, "ps_bench: %s\n", config.status().ToString().c_str()), 2;
  auto num = [&](const char* name, int64_t fallback) {
    auto v = flags->GetInt(name);
    return v.ok() && v->has_value() ? **v : fallback;
  };
  // dense | sparse | sparse-local | optimizer | memory
  const std::string only = flags->Get("only");
  std::string address = flags->Has("server") ? flags->Get("server") : config->cluster.servers[0];
  auto security = TransportSecurity::ForJob(*config);
  if (!security.ok()) {
    return std::fprintf(stderr, "ps_bench: %s\n", security.status().ToString().c_str()), 2;
  }
  Connection conn(address, static_cast<int>(num("channels", config->worker.channels_per_shard)),
                  config->server.max_message_bytes, **security);
  g_session = RandomBytes(16).value_or(std::string(16, '\1'));

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  ctx.set_wait_for_ready(true);
  v1::RegisterRequest reg;
  reg.set_session(g_session);
  reg.set_job(config->name);
  reg.set_job_layout(config->LayoutText());
  v1::RegisterResponse layout;
  grpc::Status s = conn.stub(0)->Register(&ctx, reg, &layout);
  if (!s.ok()) {
    std::fprintf(stderr,
                 "ps_bench: no shard answers at %s (%s); start one with\n"
                 "  tessera-server --config configs/bench.yaml --shard 0\n",
                 address.c_str(), s.error_message().c_str());
    return 1;
  }
  std::printf("ps_bench: shard %u of %u at %s, mode %s, optimizer %s, %zu channels\n",
              layout.shard_index(), layout.num_shards(), address.c_str(), layout.mode().c_str(),
              NameOf(config->optimizer.type), conn.size());
  int64_t clock = layout.clock();
  const int repeats = static_cast<int>(num("repeats", 20));
  if ((only.empty() || only == "dense") &&
      !BenchDense(conn, repeats, &clock, num("max-bytes", 64 << 20),
                  flags->Get("encoding") == "bf16"   ? v1::BFLOAT16
                  : flags->Get("encoding") == "fp16" ? v1::FLOAT16
                                                     : v1::FLOAT32)) {
    return 1;
  }
  bool warm_up = !flags->Has("cold");
  if (warm_up && std::none_of(layout.tables().begin(), layout.tables().end(),
                              [](const auto& t) { return t.name() == "sparse-warm-up"; })) {
    std::printf("ps_bench: the shard has no table sparse-warm-up; sparse pushes start cold\n");
    warm_up = false;
  }
  if ((only.empty() || only == "sparse") &&
      !BenchSparse(conn, num("sparse-keys", 10'000'000), static_cast<int>(num("sparse-repeats", 3)),
                   clock, num("keys-per-request", 250'000), num("seed", 42), warm_up)) {
    return 1;
  }
  if (only.empty() || only == "sparse-local") {
    BenchSparseLocal(*config, num("sparse-keys", 10'000'000), num("keys-per-request", 250'000),
                     num("seed", 42));
  }
  if (only.empty() || only == "optimizer") {
    BenchOptimizer(config->optimizer, num("optimizer-values", 16 << 20), repeats);
  }
  if (only.empty() || only == "memory") BenchFreshMemory();
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
