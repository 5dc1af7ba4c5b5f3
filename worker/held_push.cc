#include "worker/held_push.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "spdlog/spdlog.h"

namespace tessera {
namespace {

constexpr char kMagic[8] = {'T', 'S', 'H', 'E', 'L', 'D', '2', '\n'};
// Bounds a file must keep to be read (a model's tables and rows are far below).
constexpr uint64_t kMaxCount = uint64_t{1} << 34;
// A slot: magic, the session's CRC-32, 4 bytes of padding, the sequence
// number, the push's length, the push, the sequence number again (the
// trailer, below).
constexpr size_t kHeaderBytes = 32;
constexpr size_t kTrailerBytes = 8;

uint32_t Crc(absl::string_view bytes) {
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

// The sequence number after a push, most significant byte first: the
// number it is written over in the same slot, two less, differs from it in
// the last byte, so a write cut off anywhere in the trailer leaves one that
// names neither.
void PutTrailer(std::string* out, uint64_t sequence) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>(sequence >> shift));
}

// Reads what Save wrote, bounds-checked.
class Reader {
 public:
  explicit Reader(absl::string_view bytes) : bytes_(bytes) {}
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
  absl::string_view bytes_;
  size_t at_ = 0;
};

// A slot as read: its session, its sequence number (0: no slot, or one cut
// short) and the push's bytes.
struct Slot {
  uint32_t session = 0;
  uint64_t sequence = 0;
  std::string bytes;  // the whole file
  absl::string_view push;
};

Slot ReadSlot(const std::string& path) {
  Slot slot;
  std::ifstream in(path, std::ios::binary);
  if (!in) return slot;
  slot.bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  Reader r(slot.bytes);
  char magic[sizeof(kMagic)];
  uint32_t padding = 0;
  uint64_t sequence = 0, length = 0, trailer = 0;
  if (!r.Get(&magic) || std::memcmp(magic, kMagic, sizeof(kMagic)) != 0 || !r.Get(&slot.session) ||
      !r.Get(&padding) || !r.Get(&sequence) || !r.Get(&length) ||
      slot.bytes.size() - kHeaderBytes < kTrailerBytes ||
      length > slot.bytes.size() - kHeaderBytes - kTrailerBytes) {
    return slot;
  }
  for (size_t i = 0; i < kTrailerBytes; ++i) {
    trailer = trailer << 8 | static_cast<uint8_t>(slot.bytes[kHeaderBytes + length + i]);
  }
  if (trailer != sequence) return slot;  // cut short: written over, not to its end
  slot.sequence = sequence;
  slot.push = absl::string_view(slot.bytes).substr(kHeaderBytes, length);
  return slot;
}

bool WriteAll(int fd, const std::string& bytes) {
  for (size_t at = 0; at < bytes.size();) {
    const ssize_t n = pwrite(fd, bytes.data() + at, bytes.size() - at, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    at += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

HeldPushFile::HeldPushFile(std::string path, std::string session)
    : path_(std::move(path)), session_crc_(Crc(session)) {}

HeldPushFile::~HeldPushFile() {
  for (int fd : fds_) {
    if (fd >= 0) close(fd);
  }
}

std::string HeldPushFile::PathFor(const std::string& session_file, uint32_t rank) {
  std::error_code ec;
  const std::string absolute = std::filesystem::absolute(session_file, ec).string();
  return absl::StrFormat("/dev/shm/tessera-held-%08x-r%u", Crc(absolute), rank);
}

std::string HeldPushFile::SlotPath(int slot) const { return absl::StrCat(path_, ".", slot); }

absl::Status HeldPushFile::Save(int64_t clock, std::optional<int64_t> values_clock,
                                const ParameterSet& grads, const RowSet* rows) {
  if (next_sequence_ == 0) {
    // After the newest either slot holds, whosever it is, so that a restart
    // loads this push rather than an older one.
    next_sequence_ = std::max(ReadSlot(SlotPath(0)).sequence, ReadSlot(SlotPath(1)).sequence) + 1;
  }
  const uint64_t sequence = next_sequence_;
  const int slot = static_cast<int>(sequence % 2);
  std::string& out = buffer_;
  out.clear();
  out.append(kMagic, sizeof(kMagic));
  Put<uint32_t>(&out, session_crc_);
  Put<uint32_t>(&out, 0);
  Put<uint64_t>(&out, sequence);
  Put<uint64_t>(&out, 0);  // the length, below
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
  const uint64_t length = out.size() - kHeaderBytes;
  std::memcpy(&out[kHeaderBytes - sizeof(uint64_t)], &length, sizeof(length));
  // Last: a slot cut short keeps its old trailer, which names another push.
  PutTrailer(&out, sequence);
  int& fd = fds_[slot];
  if (fd < 0) fd = open(SlotPath(slot).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 || !WriteAll(fd, out)) {
    return absl::InternalError(absl::StrCat("cannot keep this worker's push in ", SlotPath(slot),
                                            ": ", std::strerror(errno)));
  }
  ++next_sequence_;
  return absl::OkStatus();
}

std::optional<HeldPush> HeldPushFile::Load() const {
  const Slot slots[2] = {ReadSlot(SlotPath(0)), ReadSlot(SlotPath(1))};
  // The newer of the two whole slots this session wrote.
  const Slot* newest = nullptr;
  for (const Slot& s : slots) {
    if (s.sequence > 0 && s.session == session_crc_ &&
        (newest == nullptr || s.sequence > newest->sequence)) {
      newest = &s;
    }
  }
  if (newest == nullptr) {
    if (!slots[0].bytes.empty() || !slots[1].bytes.empty()) {
      spdlog::warn("{}.0 and .1: no whole push of this worker's; ignored", path_);
    }
    return std::nullopt;
  }
  const Slot& slot = *newest;
  Reader r(slot.push);
  uint8_t has_values_clock = 0;
  int64_t values_clock = 0;
  uint64_t n = 0;
  HeldPush push;
  bool ok = r.Get(&push.clock) && push.clock >= 0 && r.Get(&has_values_clock) &&
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
    spdlog::warn("{}: not a whole push of this worker's; ignored",
                 SlotPath(&slot == slots ? 0 : 1));
    return std::nullopt;
  }
  if (has_values_clock) push.values_clock = values_clock;
  return push;
}

void HeldPushFile::Remove() {
  for (int slot = 0; slot < 2; ++slot) {
    if (fds_[slot] >= 0) close(fds_[slot]);
    fds_[slot] = -1;
    std::remove(SlotPath(slot).c_str());
  }
  next_sequence_ = 0;
}

}  // namespace tessera
