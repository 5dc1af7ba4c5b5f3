#include "worker/held_push.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "spdlog/spdlog.h"

namespace tessera {
namespace {

constexpr char kMagic[8] = {'T', 'S', 'H', 'E', 'L', 'D', '1', '\n'};
// Bounds a file must keep to be read (a model's tables and rows are far below).
constexpr uint64_t kMaxCount = uint64_t{1} << 34;

uint32_t Crc(const std::string& bytes) {
  return static_cast<uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(bytes.size())));
}

template <typename T>
void Put(std::string* out, const T& v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(T));
}
template <typename T>
void PutArray(std::string* out, const std::vector<T>& v) {
  Put<uint64_t>(out, v.size());
  if (!v.empty()) out->append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// Reads what Save wrote, bounds-checked.
class Reader {
 public:
  explicit Reader(const std::string& bytes) : bytes_(bytes) {}
  template <typename T>
  bool Get(T* v) {
    if (bytes_.size() - at_ < sizeof(T)) return false;
    std::memcpy(v, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return true;
  }
  template <typename T>
  bool GetArray(std::vector<T>* v) {
    uint64_t n = 0;
    if (!Get(&n) || n > kMaxCount || (bytes_.size() - at_) / sizeof(T) < n) return false;
    v->resize(n);
    if (n > 0) std::memcpy(v->data(), bytes_.data() + at_, n * sizeof(T));
    at_ += n * sizeof(T);
    return true;
  }
  bool done() const { return at_ == bytes_.size(); }

 private:
  const std::string& bytes_;
  size_t at_ = 0;
};

}  // namespace

HeldPushFile::HeldPushFile(std::string path, std::string session)
    : path_(std::move(path)), session_crc_(Crc(session)) {}

std::string HeldPushFile::PathFor(const std::string& session_file, uint32_t rank) {
  std::error_code ec;
  const std::string absolute = std::filesystem::absolute(session_file, ec).string();
  return absl::StrFormat("/dev/shm/tessera-held-%08x-r%u", Crc(absolute), rank);
}

absl::Status HeldPushFile::Save(int64_t clock, std::optional<int64_t> values_clock,
                                const ParameterSet& grads, const RowSet* rows) const {
  std::string out;
  size_t floats = 0;
  for (const auto& g : grads) floats += g.size();
  out.reserve(64 + floats * sizeof(float));
  out.append(kMagic, sizeof(kMagic));
  Put<uint32_t>(&out, session_crc_);
  Put<int64_t>(&out, clock);
  Put<uint8_t>(&out, values_clock.has_value());
  Put<int64_t>(&out, values_clock.value_or(0));
  Put<uint64_t>(&out, grads.size());
  for (const auto& g : grads) PutArray(&out, g);
  const size_t n_rows = rows == nullptr ? 0 : rows->size();
  Put<uint64_t>(&out, n_rows);
  for (size_t i = 0; i < n_rows; ++i) {
    const SparseRows& r = (*rows)[i];
    Put<uint64_t>(&out, r.table);
    Put<uint32_t>(&out, r.dim);
    PutArray(&out, r.keys);
    PutArray(&out, r.values);
  }
  const std::string tmp = path_ + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0;
  for (size_t at = 0; ok && at < out.size();) {
    const ssize_t n = write(fd, out.data() + at, out.size() - at);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    at += ok ? static_cast<size_t>(n) : 0;
  }
  if (fd >= 0) ok &= close(fd) == 0;
  if (!ok || std::rename(tmp.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    return absl::InternalError(
        absl::StrCat("cannot keep this worker's push in ", path_, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

std::optional<HeldPush> HeldPushFile::Load() const {
  std::ifstream in(path_, std::ios::binary);
  if (!in) return std::nullopt;
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Reader r(bytes);
  char magic[sizeof(kMagic)];
  uint32_t session = 0;
  uint8_t has_values_clock = 0;
  int64_t values_clock = 0;
  uint64_t n = 0;
  HeldPush push;
  bool ok = r.Get(&magic) && std::memcmp(magic, kMagic, sizeof(kMagic)) == 0 && r.Get(&session);
  if (ok && session != session_crc_) return std::nullopt;  // an earlier run's
  ok = ok && r.Get(&push.clock) && push.clock >= 0 && r.Get(&has_values_clock) &&
       r.Get(&values_clock) && r.Get(&n) && n <= kMaxCount;
  for (uint64_t i = 0; ok && i < n; ++i) ok = r.GetArray(&push.grads.emplace_back());
  ok = ok && r.Get(&n) && n <= kMaxCount;
  for (uint64_t i = 0; ok && i < n; ++i) {
    SparseRows& rows = push.rows.emplace_back();
    uint64_t table = 0;
    ok = r.Get(&table) && r.Get(&rows.dim) && rows.dim > 0 && r.GetArray(&rows.keys) &&
         r.GetArray(&rows.values) && rows.values.size() == rows.keys.size() * rows.dim;
    rows.table = static_cast<size_t>(table);
  }
  if (!ok || !r.done()) {
    spdlog::warn("{}: not a whole push of this worker's; ignored", path_);
    return std::nullopt;
  }
  if (has_values_clock) push.values_clock = values_clock;
  return push;
}

void HeldPushFile::Remove() const { std::remove(path_.c_str()); }

}  // namespace tessera
