#include "common/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

constexpr char kMagic[16] = "tessera-shm-v1";
constexpr char kPrefix[] = "/tessera-";

absl::StatusOr<std::string> RandomBytes(size_t n) {
  std::string bytes(n, '\0');
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(bytes.data() + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return absl::InternalError(absl::StrCat("getrandom: ", std::strerror(errno)));
    got += static_cast<size_t>(r);
  }
  return bytes;
}

bool ValidName(const std::string& name) {
  if (!absl::StartsWith(name, kPrefix) || name.size() > 100) return false;
  for (char c : name.substr(1)) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-')) return false;
  }
  return true;
}

}  // namespace

SharedSegment::SharedSegment(std::string name, std::string token, uint64_t capacity, char* base,
                             bool owner)
    : name_(std::move(name)),
      token_(std::move(token)),
      capacity_(capacity),
      base_(base),
      linked_(owner) {}

SharedSegment::~SharedSegment() {
  Unlink();
  munmap(base_, kHeaderBytes + capacity_);
}

void SharedSegment::Unlink() {
  if (!linked_.exchange(false)) return;
  shm_unlink(name_.c_str());
}

absl::StatusOr<std::unique_ptr<SharedSegment>> SharedSegment::Create(uint64_t capacity) {
  if (capacity == 0) return absl::InvalidArgumentError("shared memory segment of 0 bytes");
  absl::StatusOr<std::string> token = RandomBytes(kTokenBytes);
  absl::StatusOr<std::string> suffix = RandomBytes(8);
  if (!token.ok()) return token.status();
  if (!suffix.ok()) return suffix.status();
  const std::string name =
      absl::StrCat(kPrefix, getpid(), "-", absl::BytesToHexString(*suffix));
  const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("shm_open(", name, "): ", std::strerror(errno), " (is /dev/shm mounted?)"));
  }
  const uint64_t size = kHeaderBytes + capacity;
  void* base = MAP_FAILED;
  // Reserve the pages now: a /dev/shm too small for the segment (Docker's
  // default is 64 MiB) fails here, not with SIGBUS at a later write.
  int err = posix_fallocate(fd, 0, static_cast<off_t>(size));
  if (err == 0) {
    base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) err = errno;
  }
  close(fd);
  if (base == MAP_FAILED) {
    shm_unlink(name.c_str());
    return absl::ResourceExhaustedError(absl::StrCat("shared memory ", name, " of ", size,
                                                     " bytes: ", std::strerror(err),
                                                     " (is /dev/shm large enough?)"));
  }
  char* header = static_cast<char*>(base);
  std::memcpy(header, kMagic, sizeof(kMagic));
  std::memcpy(header + sizeof(kMagic), token->data(), kTokenBytes);
  return std::unique_ptr<SharedSegment>(
      new SharedSegment(name, *std::move(token), capacity, header, /*owner=*/true));
}

absl::StatusOr<std::unique_ptr<SharedSegment>> SharedSegment::Open(const std::string& name,
                                                                   uint64_t capacity,
                                                                   const std::string& token) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared memory name '", name, "' is not one Tessera makes (", kPrefix,
                     "<letters, digits, '-'>)"));
  }
  if (token.size() != kTokenBytes || capacity == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared memory ", name, ": token of ", token.size(), " bytes (expected ",
                     kTokenBytes, ") or capacity 0"));
  }
  const int fd = shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("shared memory ", name, " is not visible here: ",
                                            std::strerror(errno),
                                            " (worker and server on different hosts?)"));
  }
  struct stat st;
  const uint64_t size = kHeaderBytes + capacity;
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != size) {
    close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "shared memory ", name, " holds ", st.st_size, " bytes, expected ", size));
  }
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int err = errno;
  close(fd);
  if (base == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("mapping shared memory ", name, ": ", std::strerror(err)));
  }
  char* header = static_cast<char*>(base);
  if (std::memcmp(header, kMagic, sizeof(kMagic)) != 0 ||
      std::memcmp(header + sizeof(kMagic), token.data(), kTokenBytes) != 0) {
    munmap(base, size);
    return absl::FailedPreconditionError(absl::StrCat(
        "shared memory ", name, " does not hold the worker's token: not the same memory"));
  }
  return std::unique_ptr<SharedSegment>(
      new SharedSegment(name, token, capacity, header, /*owner=*/false));
}

absl::StatusOr<char*> SharedSegment::Bytes(uint64_t offset, uint64_t bytes) const {
  if (offset % 8 != 0 || offset > capacity_ || bytes > capacity_ - offset) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared memory [", offset, ", +", bytes, ") is not an 8-byte aligned range ",
                     "inside the segment's ", capacity_, " payload bytes"));
  }
  return base_ + kHeaderBytes + offset;
}

}  // namespace tessera
