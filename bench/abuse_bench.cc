// abuse_bench: what hostile or merely numerous clients cost a running shard's
// memory (docs/RELIABILITY.md "Hostile input"). Against a tessera-server on
// this host, it samples the server's resident memory (VmRSS of --pid) every
// 50 ms while it:
//   --mode flood    sends garbage request bodies of --bytes each from
//                   --clients concurrent callers to Push (the bodies parse as
//                   nothing; a body over server.max_message_bytes is refused)
//   --mode pulls    keeps --clients channels each pulling every dense table
//                   (as one registered worker), the many-clients load
// for --seconds, then prints idle, peak and final RSS and the calls' statuses.
//
//   abuse_bench --config JOB --server 127.0.0.1:PORT --pid PID --mode flood
//       --clients 6 --bytes 524288000 --seconds 20
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/flags.h"
#include "common/secret.h"
#include "common/security.h"
#include "proto/tessera.grpc.pb.h"

namespace tessera {
namespace {

int64_t RssKiB(int64_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (status >> key) {
    if (key == "VmRSS:") {
      int64_t kib;
      status >> kib;
      return kib;
    }
    status.ignore(1 << 10, '\n');
  }
  return -1;
}

const Program kProgram{
    "abuse_bench",
    "--config JOB --server HOST:PORT --pid PID [--mode flood|pulls] [--clients N] [--bytes B]\n"
    "       [--seconds S] [--set k=v]",
    "What hostile or numerous clients cost a running shard's memory (VmRSS of --pid).",
    {{"config", "FILE", "the shard's job YAML (required)"},
     {"set", "KEY=VALUE", "override a config key", FlagKind::kRepeatable},
     {"server", "HOST:PORT", "the shard (required)"},
     {"pid", "PID", "the shard's process, whose memory is sampled (required)"},
     {"mode", "flood|pulls", "garbage push bodies, or many pulling channels"},
     {"clients", "N", "concurrent callers"},
     {"bytes", "B", "flood: each body's size"},
     {"seconds", "S", "how long"}}};

int Main(int argc, char** argv) {
  if (auto exit = AnswerHelpOrVersion(argc, argv, kProgram)) return *exit;
  auto flags = ParseFlags(argc, argv, kProgram);
  if (!flags.ok() || !flags->Has("config") || !flags->Has("server") || !flags->Has("pid")) {
    std::fprintf(stderr, "abuse_bench: %s\n%s",
                 flags.ok() ? "--config, --server and --pid are required"
                            : std::string(flags.status().message()).c_str(),
                 Usage(kProgram).c_str());
    return 2;
  }
  auto config = LoadJobConfig(flags->Get("config"), flags->All("set"));
  if (!config.ok()) return std::fprintf(stderr, "%s\n", config.status().ToString().c_str()), 2;
  auto security = TransportSecurity::ForJob(*config);
  if (!security.ok()) return std::fprintf(stderr, "%s\n", security.status().ToString().c_str()), 2;
  auto num = [&](const char* name, int64_t fallback) {
    auto v = flags->GetInt(name);
    return v.ok() && v->has_value() ? **v : fallback;
  };
  const int64_t pid = num("pid", 0);
  const std::string mode = flags->Has("mode") ? flags->Get("mode") : "flood";
  const int clients = static_cast<int>(num("clients", mode == "flood" ? 6 : 128));
  const int64_t bytes = num("bytes", 500 << 20);
  const double seconds = static_cast<double>(num("seconds", 20));
  const std::string address = flags->Get("server");
  // Clients may send up to 2 GiB - 1: the limit under test is the server's.
  const int64_t client_max = std::numeric_limits<int32_t>::max();

  const int64_t idle = RssKiB(pid);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> peak{idle};
  std::thread sampler([&] {
    while (!stop) {
      int64_t now = RssKiB(pid);
      int64_t seen = peak.load();
      while (now > seen && !peak.compare_exchange_weak(seen, now)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  std::mutex mu;
  std::map<std::string, int64_t> statuses;
  auto count = [&](const grpc::Status& s) {
    std::lock_guard<std::mutex> lock(mu);
    ++statuses[s.ok() ? "OK" : absl::StrCat("code ", s.error_code(), " (", s.error_message().substr(0, 120), ")")];
  };
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  std::vector<std::thread> threads;
  if (mode == "flood") {
    // The body as 1 MiB pieces of one buffer of 0xff bytes (never a valid
    // message): what a client streaming a large body sends.
    const size_t kPiece = size_t{1} << 20;
    const std::string garbage(kPiece, '\xff');
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        auto channel = (*security)->Channel(address, client_max, 1000 + c);
        grpc::GenericStub stub(channel);
        while (std::chrono::steady_clock::now() < end) {
          std::vector<grpc::Slice> pieces;
          for (int64_t left = bytes; left > 0; left -= static_cast<int64_t>(kPiece)) {
            pieces.emplace_back(garbage.data(), std::min<size_t>(kPiece, left),
                                grpc::Slice::STATIC_SLICE);
          }
          grpc::ByteBuffer request(pieces.data(), pieces.size()), response;
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
          std::mutex done_mu;
          std::condition_variable done_cv;
          bool done = false;
          grpc::Status result;
          stub.UnaryCall(&ctx, "/tessera.v1.Shard/Push", grpc::StubOptions(), &request, &response,
                         [&](grpc::Status s) {
                           std::lock_guard<std::mutex> lock(done_mu);
                           result = s;
                           done = true;
                           done_cv.notify_one();
                         });
          std::unique_lock<std::mutex> lock(done_mu);
          done_cv.wait(lock, [&] { return done; });
          count(result);
        }
      });
    }
    for (auto& t : threads) t.join();  // before `garbage` goes
  } else {
    // One registered worker (rank 0) pulling every dense table on many channels.
    auto stub0 = v1::Shard::NewStub((*security)->Channel(address, client_max, 0));
    const std::string session = RandomBytes(16).value_or(std::string(16, '\1'));
    grpc::ClientContext reg_ctx;
    v1::RegisterRequest reg;
    reg.set_session(session);
    reg.set_job(config->name);
    reg.set_job_layout(config->LayoutText());
    v1::RegisterResponse layout;
    grpc::Status s = stub0->Register(&reg_ctx, reg, &layout);
    if (!s.ok()) return std::fprintf(stderr, "Register: %s\n", s.error_message().c_str()), 1;
    v1::PullRequest pull;
    pull.set_session(session);
    pull.set_clock(layout.clock());
    for (const auto& t : layout.tables()) {
      if (t.kind() != v1::DENSE) continue;
      auto* slice = pull.add_slices();
      slice->set_table(t.name());
      slice->set_offset(t.begin());
      slice->set_length(t.end() - t.begin());
    }
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        auto stub = v1::Shard::NewStub((*security)->Channel(address, client_max, 1000 + c));
        while (std::chrono::steady_clock::now() < end) {
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
          v1::PullResponse values;
          count(stub->Pull(&ctx, pull, &values));
        }
      });
    }
    for (auto& t : threads) t.join();  // before `pull` goes
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const int64_t after = RssKiB(pid);
  stop = true;
  sampler.join();
  std::printf("abuse_bench: mode %s, %d clients%s, %.0f s against %s\n", mode.c_str(), clients,
              mode == "flood" ? absl::StrCat(", ", bytes, "-byte bodies").c_str() : "", seconds,
              address.c_str());
  std::printf("server RSS: idle %.1f MiB, peak %.1f MiB, 2 s after %.1f MiB\n", idle / 1024.0,
              peak.load() / 1024.0, after / 1024.0);
  for (const auto& [status, n] : statuses) {
    std::printf("  %s: %lld calls\n", status.c_str(), static_cast<long long>(n));
  }
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
