#include "server/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "common/status.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

constexpr char kMagic[] = "TSCKPT01";  // 8 bytes without the NUL
constexpr char kPlanMagic[] = "TSPLAN01";
constexpr size_t kMagicBytes = 8;
constexpr char kManifest[] = "MANIFEST";
constexpr char kPlanLog[] = "EPOCH_PLANS";
constexpr char kData[] = "data";
constexpr char kPrefix[] = "ckpt-";
constexpr char kTmpPrefix[] = ".tmp-";
// Bytes a write or read moves at once, and over which a CRC is extended.
constexpr uint64_t kIoBytes = uint64_t{8} << 20;

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

uint32_t Crc32(const char* data, uint64_t n, uint32_t crc = 0) {
  // zlib's crc32_z takes any length; feed it in pieces so a huge buffer's
  // length never needs more than z_size_t.
  uLong c = crc;
  for (uint64_t done = 0; done < n;) {
    const uint64_t len = std::min(kIoBytes, n - done);
    c = crc32_z(c, reinterpret_cast<const Bytef*>(data + done), len);
    done += len;
  }
  return static_cast<uint32_t>(c);
}

absl::Status WriteAll(int fd, const char* data, uint64_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, std::min(n, kIoBytes));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return Errno("cannot write", path);
    data += w;
    n -= static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

absl::Status ReadAll(int fd, char* data, uint64_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t r = ::read(fd, data, std::min(n, kIoBytes));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Errno("cannot read", path);
    if (r == 0) return absl::DataLossError(absl::StrCat(path, " is shorter than its manifest says"));
    data += r;
    n -= static_cast<uint64_t>(r);
  }
  return absl::OkStatus();
}

// Opens, writes and fsyncs one file.
absl::Status WriteFile(const std::string& path, const std::vector<std::pair<const char*, uint64_t>>& parts) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot create", path);
  absl::Status s;
  for (const auto& [data, n] : parts) {
    s = WriteAll(fd, data, n, path);
    if (!s.ok()) break;
  }
  if (s.ok() && ::fsync(fd) != 0) s = Errno("cannot fsync", path);
  ::close(fd);
  return s;
}

absl::Status SyncDir(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("cannot open folder", path);
  const int r = ::fsync(fd);
  ::close(fd);
  return r == 0 ? absl::OkStatus() : Errno("cannot fsync folder", path);
}

// `magic`, the little-endian zlib CRC-32 of `body`, then `body`: how a
// MANIFEST and a plan log are stored.
std::string Framed(const char* magic, const std::string& body) {
  std::string out(magic, kMagicBytes);
  const uint32_t crc = Crc32(body.data(), body.size());
  for (int b = 0; b < 4; ++b) out.push_back(static_cast<char>((crc >> (8 * b)) & 0xff));
  out += body;
  return out;
}

// Reads `file` written by Framed(magic, ...) into *message. NOT_FOUND when
// the file is missing; DATA_LOSS (naming the file and `what`) otherwise.
absl::Status ReadFramed(const std::string& file, const char* magic, const char* what,
                        google::protobuf::MessageLite* message) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const std::string error = absl::StrCat(file, ": ", std::strerror(errno));
    return errno == ENOENT ? absl::NotFoundError(error) : absl::DataLossError(error);
  }
  std::string bytes;
  char buf[1 << 16];
  ssize_t r;
  while ((r = ::read(fd, buf, sizeof(buf))) > 0) bytes.append(buf, static_cast<size_t>(r));
  ::close(fd);
  if (bytes.size() < kMagicBytes + 4 || std::memcmp(bytes.data(), magic, kMagicBytes) != 0) {
    return absl::DataLossError(absl::StrCat(file, ": not a Tessera ", what));
  }
  uint32_t crc = 0;
  for (int b = 0; b < 4; ++b) {
    crc |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[kMagicBytes + b])) << (8 * b);
  }
  const char* body = bytes.data() + kMagicBytes + 4;
  const size_t body_size = bytes.size() - kMagicBytes - 4;
  if (Crc32(body, body_size) != crc) {
    return absl::DataLossError(absl::StrCat(file, ": checksum mismatch (torn or corrupted)"));
  }
  if (!message->ParseFromArray(body, static_cast<int>(body_size))) {
    return absl::DataLossError(absl::StrCat(file, ": does not parse"));
  }
  return absl::OkStatus();
}

std::string CheckpointName(int64_t clock, int64_t unix_ms) {
  return absl::StrFormat("%s%012d-%013d", kPrefix, clock, unix_ms);
}

// The (clock, unix_ms) of a checkpoint folder's name; false for other names.
bool ParseName(const std::string& name, int64_t* clock, int64_t* unix_ms) {
  if (!absl::StartsWith(name, kPrefix)) return false;
  const std::string rest = name.substr(std::strlen(kPrefix));
  const size_t dash = rest.find('-');
  if (dash == std::string::npos) return false;
  return absl::SimpleAtoi(rest.substr(0, dash), clock) &&
         absl::SimpleAtoi(rest.substr(dash + 1), unix_ms);
}

}  // namespace

uint64_t ShardState::bytes() const {
  uint64_t total = 0;
  for (const auto& t : tables) total += t.size();
  return total;
}

CheckpointStore::CheckpointStore(std::string root, uint32_t keep)
    : root_(std::move(root)), keep_(std::max<uint32_t>(keep, 1)) {
  std::error_code ec;
  fs::create_directories(root_, ec);
  for (const auto& entry : fs::directory_iterator(root_, ec)) {
    if (absl::StartsWith(entry.path().filename().string(), kTmpPrefix)) {
      fs::remove_all(entry.path(), ec);  // a write a crash cut short
    }
  }
}

absl::StatusOr<CheckpointInfo> CheckpointStore::Write(ShardState* state) {
  const auto start = std::chrono::steady_clock::now();
  v1::CheckpointManifest& m = state->manifest;
  if (m.tables_size() != static_cast<int>(state->tables.size())) {
    return absl::InternalError("checkpoint: the manifest and the table data disagree in count");
  }
  std::error_code ec;
  fs::create_directories(root_, ec);
  const std::string name = CheckpointName(m.clock(), m.unix_ms());
  const std::string tmp = absl::StrCat(root_, "/", kTmpPrefix, name);
  const std::string final_path = absl::StrCat(root_, "/", name);
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec)) {
    return absl::InternalError(absl::StrCat("cannot create folder ", tmp, ": ", ec.message()));
  }
  // The data file, with each table's CRC computed as it is written.
  const std::string data_path = tmp + "/" + kData;
  const int fd = ::open(data_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot create", data_path);
  // Each table's CRC-32 is computed on a second thread while the bytes are
  // written, so the checksum costs no time when the disk is the slower.
  absl::Status s;
  uint64_t offset = 0;
  for (size_t i = 0; i < state->tables.size() && s.ok(); ++i) {
    const ByteBuffer& t = state->tables[i];
    std::future<uint32_t> crc =
        std::async(std::launch::async, [&t] { return Crc32(t.data(), t.size()); });
    for (uint64_t done = 0; done < t.size() && s.ok(); done += kIoBytes) {
      s = WriteAll(fd, t.data() + done, std::min(kIoBytes, t.size() - done), data_path);
    }
    v1::CheckpointTable* mt = m.mutable_tables(static_cast<int>(i));
    mt->set_offset(offset);
    mt->set_bytes(t.size());
    mt->set_crc32(crc.get());
    offset += t.size();
  }
  if (s.ok() && ::fdatasync(fd) != 0) s = Errno("cannot fsync", data_path);
  ::close(fd);
  if (!s.ok()) {
    fs::remove_all(tmp, ec);
    return s;
  }
  m.set_data_file(kData);
  m.set_data_bytes(offset);
  const std::string manifest = Framed(kMagic, m.SerializeAsString());
  s = WriteFile(tmp + "/" + kManifest, {{manifest.data(), manifest.size()}});
  if (s.ok()) s = SyncDir(tmp);
  if (s.ok() && ::rename(tmp.c_str(), final_path.c_str()) != 0) {
    s = Errno("cannot rename to", final_path);
  }
  if (s.ok()) s = SyncDir(root_);
  if (!s.ok()) {
    fs::remove_all(tmp, ec);
    return s;
  }
  // Only now, with the new one complete, do the oldest go.
  std::vector<std::string> all = List(root_);
  for (size_t i = 0; i + keep_ < all.size(); ++i) fs::remove_all(all[i], ec);
  CheckpointInfo info;
  info.path = final_path;
  info.clock = m.clock();
  info.bytes = offset;
  info.seconds = Seconds(start);
  return info;
}

std::vector<std::string> CheckpointStore::List(const std::string& root) {
  std::map<std::pair<int64_t, int64_t>, std::string> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    int64_t clock, unix_ms;
    const std::string name = entry.path().filename().string();
    if (entry.is_directory(ec) && ParseName(name, &clock, &unix_ms)) {
      found[{clock, unix_ms}] = entry.path().string();
    }
  }
  std::vector<std::string> paths;
  for (auto& [key, path] : found) paths.push_back(std::move(path));
  return paths;
}

absl::StatusOr<v1::CheckpointManifest> CheckpointStore::ReadManifest(const std::string& path) {
  v1::CheckpointManifest m;
  absl::Status s = ReadFramed(path + "/" + kManifest, kMagic, "checkpoint manifest", &m);
  // A checkpoint folder without its manifest is torn, not absent.
  if (absl::IsNotFound(s)) return absl::DataLossError(s.message());
  if (!s.ok()) return s;
  return m;
}

absl::Status WritePlanLog(const std::string& root, const v1::EpochPlanLog& log) {
  std::error_code ec;
  fs::create_directories(root, ec);
  const std::string path = absl::StrCat(root, "/", kPlanLog);
  const std::string tmp = absl::StrCat(root, "/", kTmpPrefix, kPlanLog);
  const std::string bytes = Framed(kPlanMagic, log.SerializeAsString());
  absl::Status s = WriteFile(tmp, {{bytes.data(), bytes.size()}});
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = Errno("cannot rename to", path);
  if (s.ok()) s = SyncDir(root);
  if (!s.ok()) fs::remove(tmp, ec);
  return s;
}

absl::StatusOr<v1::EpochPlanLog> ReadPlanLog(const std::string& root) {
  v1::EpochPlanLog log;
  TESSERA_RETURN_IF_ERROR(
      ReadFramed(absl::StrCat(root, "/", kPlanLog), kPlanMagic, "epoch plan log", &log));
  return log;
}

std::string CheckpointStore::IdentityDifference(const v1::CheckpointIdentity& have,
                                                const v1::CheckpointIdentity& want) {
  auto differ = [](const std::string& field, const std::string& a, const std::string& b) {
    return absl::StrCat(field, " is ", a, " in the checkpoint but ", b, " in this job");
  };
  const std::pair<const char*, std::pair<std::string, std::string>> fields[] = {
      {"the job name", {have.job(), want.job()}},
      {"the shard count", {absl::StrCat(have.num_shards()), absl::StrCat(want.num_shards())}},
      {"the shard index", {absl::StrCat(have.shard_index()), absl::StrCat(want.shard_index())}},
      {"cluster.workers", {absl::StrCat(have.num_workers()), absl::StrCat(want.num_workers())}},
      {"optimizer.type", {have.optimizer(), want.optimizer()}},
      {"the optimizer's slots",
       {absl::StrCat(have.optimizer_slots()), absl::StrCat(want.optimizer_slots())}},
      {"BSP aggregation", {have.aggregate() ? "on" : "off", want.aggregate() ? "on" : "off"}},
  };
  for (const auto& [field, values] : fields) {
    if (values.first != values.second) return differ(field, values.first, values.second);
  }
  for (int i = 0; i < std::max(have.tables_size(), want.tables_size()); ++i) {
    const std::string a = i < have.tables_size() ? have.tables(i) : "(none)";
    const std::string b = i < want.tables_size() ? want.tables(i) : "(none)";
    if (a != b) return differ(absl::StrCat("table ", i), "'" + a + "'", "'" + b + "'");
  }
  return "";
}

absl::Status CheckpointStore::WriteManifest(const std::string& path,
                                            const v1::CheckpointManifest& m) {
  const std::string bytes = Framed(kMagic, m.SerializeAsString());
  const std::string tmp = absl::StrCat(path, "/", kTmpPrefix, kManifest);
  absl::Status s = WriteFile(tmp, {{bytes.data(), bytes.size()}});
  const std::string target = absl::StrCat(path, "/", kManifest);
  if (s.ok() && ::rename(tmp.c_str(), target.c_str()) != 0) s = Errno("cannot rename to", target);
  if (s.ok()) s = SyncDir(path);
  return s;
}

absl::Status CheckpointStore::CheckTiling(const v1::CheckpointManifest& m) {
  // The tables tile the data file exactly: nothing past the last one.
  uint64_t tiled = 0;
  for (const v1::CheckpointTable& t : m.tables()) {
    if (t.offset() != tiled || t.bytes() > m.data_bytes() - tiled) {
      return absl::DataLossError(absl::StrCat("table '", t.name(), "' has a bad byte range"));
    }
    tiled += t.bytes();
  }
  if (tiled != m.data_bytes()) {
    return absl::DataLossError(
        absl::StrCat("the tables hold ", tiled, " bytes of the data file's ", m.data_bytes()));
  }
  return absl::OkStatus();
}

absl::StatusOr<ShardState> CheckpointStore::Load(const std::string& path,
                                                 const v1::CheckpointIdentity& want,
                                                 const ManifestCheck& fits) {
  TESSERA_ASSIGN_OR_RETURN(v1::CheckpointManifest m, ReadManifest(path));
  const std::string difference = IdentityDifference(m.identity(), want);
  if (!difference.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint ", path, " is of another job, layout or sharding: ", difference));
  }
  if (fits) {
    const absl::Status s = fits(m);
    if (!s.ok()) return absl::DataLossError(absl::StrCat(path, ": ", s.message()));
  }
  if (absl::Status tiled = CheckTiling(m); !tiled.ok()) {
    return absl::DataLossError(absl::StrCat(path, ": ", tiled.message()));
  }
  const std::string data_path = path + "/" + m.data_file();
  struct stat st;
  if (m.data_file().empty() || m.data_file().find('/') != std::string::npos ||
      ::stat(data_path.c_str(), &st) != 0) {
    return absl::DataLossError(absl::StrCat(data_path, ": missing"));
  }
  if (static_cast<uint64_t>(st.st_size) != m.data_bytes()) {
    return absl::DataLossError(absl::StrCat(data_path, " holds ", st.st_size,
                                            " bytes; its manifest says ", m.data_bytes(),
                                            " (truncated or torn)"));
  }
  // Two passes. First every table's range is read through one reused buffer
  // and checked against its CRC, so nothing is handed to the shard before
  // the whole file verifies. Then the file, now in the page cache, is mapped
  // and the tables copy from the mapping: no new memory is touched (on VMs
  // where first touching anonymous memory is slow, reading into fresh
  // buffers costs more than the disk; docs/PERFORMANCE.md).
  const int fd = ::open(data_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::DataLossError(absl::StrCat(data_path, ": ", std::strerror(errno)));
  // The kernel reads the whole file ahead while the checksum pass works
  // through what has arrived: the disk and the CRC overlap.
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  ::posix_fadvise(fd, 0, static_cast<off_t>(m.data_bytes()), POSIX_FADV_WILLNEED);
  std::unique_ptr<char[]> buffer(new char[kIoBytes]);
  absl::Status s;
  uint64_t offset = 0;
  for (const v1::CheckpointTable& t : m.tables()) {
    uint32_t crc = 0;
    for (uint64_t done = 0; done < t.bytes() && s.ok(); done += kIoBytes) {
      const uint64_t len = std::min(kIoBytes, t.bytes() - done);
      s = ReadAll(fd, buffer.get(), len, data_path);
      if (s.ok()) crc = Crc32(buffer.get(), len, crc);
    }
    if (s.ok() && crc != t.crc32()) {
      s = absl::DataLossError(
          absl::StrCat(data_path, ": table '", t.name(), "' fails its checksum (corrupted)"));
    }
    if (!s.ok()) break;
    offset += t.bytes();
  }
  std::shared_ptr<const void> mapping;
  char* base = nullptr;
  if (s.ok() && m.data_bytes() > 0) {
    void* at = ::mmap(nullptr, m.data_bytes(), PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (at == MAP_FAILED) {
      s = absl::DataLossError(absl::StrCat("cannot map ", data_path, ": ", std::strerror(errno)));
    } else {
      const uint64_t bytes = m.data_bytes();
      mapping = std::shared_ptr<const void>(
          at, [bytes](const void* p) { ::munmap(const_cast<void*>(p), bytes); });
      base = static_cast<char*>(at);
    }
  }
  ::close(fd);
  TESSERA_RETURN_IF_ERROR(s);
  ShardState state;
  for (const v1::CheckpointTable& t : m.tables()) {
    state.tables.emplace_back(mapping, base + t.offset(), t.bytes());
  }
  state.manifest = std::move(m);
  return state;
}

absl::StatusOr<ShardState> CheckpointStore::LoadNewest(const v1::CheckpointIdentity& want,
                                                       int64_t clock, std::vector<std::string>* log,
                                                       CheckpointInfo* info,
                                                       const ManifestCheck& fits) const {
  std::vector<std::string> all = List(root_);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    int64_t c, unix_ms;
    ParseName(fs::path(*it).filename().string(), &c, &unix_ms);
    if (clock >= 0 && c != clock) continue;
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<ShardState> state = Load(*it, want, fits);
    if (state.ok()) {
      if (info != nullptr) {
        info->path = *it;
        info->clock = state->manifest.clock();
        info->bytes = state->manifest.data_bytes();
        info->seconds = Seconds(start);
      }
      return state;
    }
    if (absl::IsFailedPrecondition(state.status())) return state.status();
    log->push_back(absl::StrCat("skipped ", *it, ": ", state.status().message()));
  }
  return absl::NotFoundError(absl::StrCat(
      "no valid checkpoint", clock >= 0 ? absl::StrCat(" of clock ", clock) : "", " in ", root_,
      log->empty() ? "" : absl::StrCat(" (", log->size(), " skipped)")));
}

namespace {

// The clocks of shard `s`'s checkpoints whose manifests verify.
absl::StatusOr<std::set<int64_t>> VerifiedClocks(const std::string& dir, uint32_t s) {
  const std::string root = absl::StrCat(dir, "/shard-", s);
  std::set<int64_t> clocks;
  for (const std::string& path : CheckpointStore::List(root)) {
    absl::StatusOr<v1::CheckpointManifest> m = CheckpointStore::ReadManifest(path);
    if (m.ok()) clocks.insert(m->clock());
  }
  if (clocks.empty()) {
    return absl::NotFoundError(absl::StrCat("no checkpoint of shard ", s, " in ", root));
  }
  return clocks;
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> NewestClocks(const std::string& dir, uint32_t num_shards) {
  std::vector<int64_t> newest;
  for (uint32_t s = 0; s < num_shards; ++s) {
    TESSERA_ASSIGN_OR_RETURN(std::set<int64_t> clocks, VerifiedClocks(dir, s));
    newest.push_back(*clocks.rbegin());
  }
  return newest;
}

absl::StatusOr<int64_t> NewestCommonClock(const std::string& dir, uint32_t num_shards) {
  std::set<int64_t> common;
  for (uint32_t s = 0; s < num_shards; ++s) {
    TESSERA_ASSIGN_OR_RETURN(std::set<int64_t> clocks, VerifiedClocks(dir, s));
    if (s == 0) {
      common = clocks;
    } else {
      std::set<int64_t> both;
      std::set_intersection(common.begin(), common.end(), clocks.begin(), clocks.end(),
                            std::inserter(both, both.begin()));
      common = std::move(both);
    }
  }
  if (common.empty()) {
    return absl::NotFoundError(
        absl::StrCat("the shards' checkpoints in ", dir, " share no clock: no consistent cut"));
  }
  return *common.rbegin();
}

}  // namespace tessera
