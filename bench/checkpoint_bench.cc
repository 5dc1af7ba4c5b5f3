// checkpoint_bench: what a shard checkpoint of a large dense table costs —
// the copy under the chunk locks (what a request can wait on; from the
// second repeat on into the previous cut's buffers, as the checkpointer
// recycles them), the write to disk (write and fsync, the CRC-32 alongside;
// off the request path), and the restore (read and verify, then load into
// the tables) — in bytes per second, next to the disk's own sequential speed
// measured the way `dd` does, in the same sitting.
//
//   bazel-bin/bench/checkpoint_bench --dir /var/tmp/ckpt-bench --floats 268435456
//       [--optimizer sgd] [--repeats 3] [--drop-caches]
//
// --drop-caches writes 3 to /proc/sys/vm/drop_caches before each restore, so
// the read comes from the disk, not the page cache (root only; said when it
// cannot). Prints one line per measurement and a final JSON line.
#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/config.h"
#include "common/flags.h"
#include "nlohmann/json.hpp"
#include "server/checkpoint.h"
#include "server/shard.h"

namespace tessera {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "checkpoint_bench: %s\n", message.c_str());
  return 2;
}

// The disk alone, as `dd bs=8M conv=fdatasync` and `dd bs=8M` would see
// it: `bytes` written from one buffer and fsynced, then (page cache dropped
// when `drop`) read back. Returns {write MB/s, read MB/s}.
std::pair<double, double> DiskSpeed(const std::string& dir, uint64_t bytes, bool drop);

bool DropCaches() {
  ::sync();
  std::ofstream f("/proc/sys/vm/drop_caches");
  f << "3\n";
  f.flush();
  return f.good();
}

std::pair<double, double> DiskSpeed(const std::string& dir, uint64_t bytes, bool drop) {
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/dd.bin";
  std::vector<char> buf(8 << 20, 1);
  const int out = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  double t0 = Now();
  for (uint64_t done = 0; done < bytes; done += buf.size()) {
    if (::write(out, buf.data(), buf.size()) != static_cast<ssize_t>(buf.size())) break;
  }
  ::fdatasync(out);
  ::close(out);
  const double write_s = Now() - t0;
  if (drop) DropCaches();
  const int in = ::open(path.c_str(), O_RDONLY);
  t0 = Now();
  while (::read(in, buf.data(), buf.size()) > 0) {
  }
  const double read_s = Now() - t0;
  ::close(in);
  std::filesystem::remove(path);
  return {bytes / 1e6 / write_s, bytes / 1e6 / read_s};
}

const Program kProgram{
    "checkpoint_bench",
    "[--dir DIR] [--floats N] [--optimizer NAME] [--repeats N] [--drop-caches]",
    "What a shard checkpoint of a large dense table costs: the copy under the chunk locks,\n"
    "the write, the restore, next to the disk's own sequential speed.",
    {{"dir", "DIR", "where to write (default /var/tmp/tessera-ckpt-bench)"},
     {"floats", "N", "the table's size (default 2^28, 1 GiB)"},
     {"optimizer", "NAME", "sgd, momentum, adagrad, adam or ftrl (default sgd)"},
     {"repeats", "N", "rounds (default 3)"},
     {"drop-caches", "", "drop the page cache before each restore (root)", FlagKind::kSwitch}}};

int Main(int argc, char** argv) {
  if (auto exit = AnswerHelpOrVersion(argc, argv, kProgram)) return *exit;
  auto flags = ParseFlags(argc, argv, kProgram);
  if (!flags.ok()) return Fail(std::string(flags.status().message()));
  const std::string dir = flags->Has("dir") ? flags->Get("dir") : "/var/tmp/tessera-ckpt-bench";
  auto floats = flags->GetInt("floats");
  auto repeats_flag = flags->GetInt("repeats");
  if (!floats.ok() || !repeats_flag.ok()) return Fail("--floats and --repeats take integers");
  const int64_t n = floats->value_or(int64_t{1} << 28);  // 1 GiB of float32
  const int repeats = static_cast<int>(repeats_flag->value_or(3));
  const std::string optimizer = flags->Has("optimizer") ? flags->Get("optimizer") : "sgd";
  auto config = ParseJobConfig(
      absl::StrCat("name: ckpt-bench\ncluster: {servers: ['127.0.0.1:1'], workers: 1}\n"
                   "model: {type: tables, tables: [{name: big, kind: dense, size: ",
                   n, ", init: {type: uniform}}]}\noptimizer: {type: ", optimizer, "}\n"),
      {});
  if (!config.ok()) return Fail(std::string(config.status().message()));
  std::filesystem::remove_all(dir);

  // CRC-32 alone, on the same bytes: how much of the write and read it takes.
  {
    std::vector<char> buf(64 << 20, 7);
    const double t0 = Now();
    uLong crc = 0;
    for (int i = 0; i < 8; ++i)
      crc = crc32_z(crc, reinterpret_cast<Bytef*>(buf.data()), buf.size());
    const double s = Now() - t0;
    std::printf("zlib crc32: %.0f MB/s (%lx)\n", 8.0 * buf.size() / 1e6 / s, crc);
  }
  auto shard = Shard::Create(*config, 0);
  if (!shard.ok()) return Fail(std::string(shard.status().message()));
  nlohmann::json json = nlohmann::json::object();
  for (int r = 0; r < repeats; ++r) {
    const auto [disk_write, disk_read] =
        DiskSpeed(dir + "-dd", n * sizeof(float), flags->Has("drop-caches"));
    std::printf(
        "repeat %d: the disk alone (8 MiB writes + fdatasync; reads): write %.0f MB/s, "
        "read %.0f MB/s\n",
        r + 1, disk_write, disk_read);
    CheckpointStore store(dir, 1);
    double t0 = Now();
    std::unique_ptr<ShardState> cut = (*shard)->Snapshot();
    const double copy_s = Now() - t0;
    t0 = Now();
    auto info = store.Write(cut.get());
    const double write_s = Now() - t0;
    if (!info.ok()) return Fail(std::string(info.status().message()));
    (*shard)->Recycle(std::move(cut));  // as the checkpointer does: the next cut reuses it
    // The shard to restore into exists first (a restarted server builds it,
    // then restores), so its initialization is not in the timing.
    auto fresh = Shard::Create(*config, 0);
    const bool dropped = flags->Has("drop-caches") && DropCaches();
    if (flags->Has("drop-caches") && !dropped) std::printf("(could not drop the page cache)\n");
    t0 = Now();
    std::vector<std::string> skipped;
    CheckpointInfo loaded;
    auto state = store.LoadNewest((*fresh)->Identity(), -1, &skipped, &loaded);
    const double read_s = Now() - t0;
    if (!state.ok()) return Fail(std::string(state.status().message()));
    t0 = Now();
    absl::Status s = (*fresh)->Restore(*state);
    const double apply_s = Now() - t0;
    if (!s.ok()) return Fail(std::string(s.message()));
    const double mb = info->bytes / 1e6;
    std::printf(
        "repeat %d: %.0f MB: copy %.3f s (%.0f MB/s), write+crc+fsync %.3f s (%.0f MB/s), "
        "read+verify %.3f s (%.0f MB/s%s), load %.3f s; restore total %.0f MB/s\n"
        "          write at %.0f%% of the disk's write speed, restore at %.0f%% of its read "
        "speed\n",
        r + 1, mb, copy_s, mb / copy_s, write_s, mb / write_s, read_s, mb / read_s,
        dropped ? ", page cache dropped" : ", page cache warm", apply_s, mb / (read_s + apply_s),
        100 * mb / write_s / disk_write, 100 * mb / (read_s + apply_s) / disk_read);
    if (r == repeats - 1) {
      json = {{"bytes", info->bytes},
              {"copy_s", copy_s},
              {"write_s", write_s},
              {"read_s", read_s},
              {"load_s", apply_s},
              {"write_mb_s", mb / write_s},
              {"restore_mb_s", mb / (read_s + apply_s)},
              {"disk_write_mb_s", disk_write},
              {"disk_read_mb_s", disk_read},
              {"cache_dropped", dropped}};
    }
  }
  std::printf("%s\n", json.dump().c_str());
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) { return tessera::Main(argc, argv); }
