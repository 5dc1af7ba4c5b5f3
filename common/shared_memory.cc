#include "common/shared_memory.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <atomic>
#include <mutex>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/secret.h"
#include "common/status.h"

namespace tessera {
namespace {

constexpr char kMagic[16] = "tessera-shm-v1";
constexpr char kPrefix[] = "/tessera-";

bool ValidName(const std::string& name) {
  if (!absl::StartsWith(name, kPrefix) || name.size() > 100) return false;
  for (char c : name.substr(1)) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-')) return false;
  }
  return true;
}

// The SIGBUS guard. A guarded copy on this thread sets `guard`; the handler
// jumps back to it. Initial-exec TLS: reading it in the handler allocates
// nothing.
// Volatile, with signal fences around the copy: memcpy is a builtin the
// compiler knows does not read `guard`, so it would otherwise drop the store
// before the copy as dead.
__attribute__((tls_model("initial-exec"))) thread_local sigjmp_buf* volatile guard = nullptr;
struct sigaction previous_bus_action;

void OnBus(int sig, siginfo_t* info, void* context) {
  if (sigjmp_buf* jump = guard) {
    guard = nullptr;
    siglongjmp(*jump, 1);
  }
  // Not ours: the previous disposition handles it (by default the fault
  // repeats when this returns and kills the process, as without the guard).
  if (previous_bus_action.sa_flags & SA_SIGINFO) {
    if (previous_bus_action.sa_sigaction != nullptr) {
      previous_bus_action.sa_sigaction(sig, info, context);
      return;
    }
  } else if (previous_bus_action.sa_handler != SIG_DFL &&
             previous_bus_action.sa_handler != SIG_IGN) {
    previous_bus_action.sa_handler(sig);
    return;
  }
  sigaction(SIGBUS, &previous_bus_action, nullptr);
}

// Installs OnBus unless it is the disposition now. Checked on every guarded
// copy (one system call, next to a copy of kilobytes to megabytes): whoever
// set SIGBUS since (a test framework restoring its own, a library) would
// otherwise silently take the guard away.
void InstallBusGuard() {
  static std::mutex mu;
  struct sigaction current {};
  sigaction(SIGBUS, nullptr, &current);
  if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == OnBus) return;
  std::lock_guard<std::mutex> lock(mu);
  sigaction(SIGBUS, nullptr, &current);
  if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == OnBus) return;
  struct sigaction action {};
  action.sa_sigaction = OnBus;
  action.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  sigaction(SIGBUS, &action, &previous_bus_action);
}

// memcpy that returns false instead of dying when the memory it touches is
// gone (SIGBUS). Keep it free of locks and allocations: it may be left by a
// longjmp at any instruction.
bool GuardedCopy(void* dst, const void* src, size_t n) {
  InstallBusGuard();
  sigjmp_buf jump;
  // Save the signal mask: the handler runs with SIGBUS blocked unless
  // SA_NODEFER, and siglongjmp restores the mask saved here either way.
  if (sigsetjmp(jump, /*savemask=*/1) != 0) return false;
  guard = &jump;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  std::memcpy(dst, src, n);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  guard = nullptr;
  return true;
}

// Names this process created and has not unlinked, for the termination
// handler: fixed slots of plain chars, so that the handler reads them without
// allocating or locking. A slot is claimed with `state` 0 -> 1 (writing),
// published as 2, and freed back to 0.
constexpr int kNameSlots = 256;
struct NameSlot {
  std::atomic<int> state{0};
  char path[128];  // "/dev/shm/tessera-..."
};
NameSlot name_slots[kNameSlots];

void RememberName(const std::string& name) {
  const std::string path = "/dev/shm" + name;
  if (path.size() >= sizeof(NameSlot::path)) return;
  for (NameSlot& slot : name_slots) {
    int free = 0;
    if (!slot.state.compare_exchange_strong(free, 1)) continue;
    std::memcpy(slot.path, path.c_str(), path.size() + 1);
    slot.state.store(2);
    return;
  }
}

void ForgetName(const std::string& name) {
  const std::string path = "/dev/shm" + name;
  for (NameSlot& slot : name_slots) {
    if (slot.state.load() == 2 && path == slot.path) {
      slot.state.store(0);
      return;
    }
  }
}

void OnTermination(int sig) {
  for (NameSlot& slot : name_slots) {
    if (slot.state.load() == 2) unlink(slot.path);  // async-signal-safe
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

}  // namespace

void SharedSegment::UnlinkOnTermination() {
  for (int sig : {SIGTERM, SIGINT}) {
    struct sigaction action {};
    action.sa_handler = OnTermination;
    sigemptyset(&action.sa_mask);
    sigaction(sig, &action, nullptr);
  }
}

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
  ForgetName(name_);
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
  RememberName(name);
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
  if (token.size() != kTokenBytes || capacity == 0 || capacity > kMaxCapacity) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory ", name, ": token of ", token.size(), " bytes (expected ", kTokenBytes,
        ") or capacity ", capacity, " (expected 1 to ", kMaxCapacity, ")"));
  }
  const int fd = shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("shared memory ", name, " is not visible here: ",
                                            std::strerror(errno),
                                            " (worker and server on different hosts?)"));
  }
  struct stat st {};
  const uint64_t size = kHeaderBytes + capacity;  // no wrap: capacity <= kMaxCapacity
  if (fstat(fd, &st) != 0 || st.st_size < 0 || static_cast<uint64_t>(st.st_size) != size) {
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
  char seen[sizeof(kMagic) + kTokenBytes];
  if (!GuardedCopy(seen, header, sizeof(seen)) ||  // shrunk since fstat
      std::memcmp(seen, kMagic, sizeof(kMagic)) != 0 ||
      std::memcmp(seen + sizeof(kMagic), token.data(), kTokenBytes) != 0) {
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

absl::Status SharedSegment::CopyOut(uint64_t offset, void* dst, uint64_t n) const {
  TESSERA_ASSIGN_OR_RETURN(char* at, Bytes(offset, n));
  if (GuardedCopy(dst, at, n)) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("shared memory ", name_,
                                          " was shrunk under its mapping while reading [", offset,
                                          ", +", n, "); register a new segment"));
}

absl::Status SharedSegment::CopyIn(uint64_t offset, const void* src, uint64_t n) const {
  TESSERA_ASSIGN_OR_RETURN(char* at, Bytes(offset, n));
  if (GuardedCopy(at, src, n)) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("shared memory ", name_,
                                          " was shrunk under its mapping while writing [", offset,
                                          ", +", n, "); register a new segment"));
}

}  // namespace tessera
