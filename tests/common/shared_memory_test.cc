// Shared-memory segments: what one mapping writes the other reads; a wrong
// token, size or name is refused; ranges are bounds-checked; and nothing is
// left in /dev/shm once the name is unlinked.
#include "common/shared_memory.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <sstream>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace tessera {
namespace {

TEST_CASE("a segment opened by name shares its bytes with its creator") {
  auto created = SharedSegment::Create(4096);
  REQUIRE(created.ok());
  SharedSegment& a = **created;
  CHECK(a.name().rfind("/tessera-", 0) == 0);
  CHECK(a.token().size() == SharedSegment::kTokenBytes);
  CHECK(a.capacity() == 4096);

  auto opened = SharedSegment::Open(a.name(), a.capacity(), a.token());
  REQUIRE(opened.ok());
  SharedSegment& b = **opened;
  std::memcpy(*a.Bytes(64, 6), "tessie", 6);
  CHECK(std::memcmp(*b.Bytes(64, 6), "tessie", 6) == 0);
  std::memcpy(*b.Bytes(4088, 8), "lastword", 8);
  CHECK(std::memcmp(*a.Bytes(4088, 8), "lastword", 8) == 0);

  // Unlinked, the name is gone but both mappings still work.
  a.Unlink();
  a.Unlink();  // idempotent
  CHECK(SharedSegment::Open(a.name(), a.capacity(), a.token()).status().code() ==
        absl::StatusCode::kNotFound);
  std::memcpy(*a.Bytes(0, 4), "more", 4);
  CHECK(std::memcmp(*b.Bytes(0, 4), "more", 4) == 0);
}

TEST_CASE("two segments get different names and tokens") {
  auto a = SharedSegment::Create(64);
  auto b = SharedSegment::Create(64);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK((*a)->name() != (*b)->name());
  CHECK((*a)->token() != (*b)->token());
}

TEST_CASE("Open refuses a wrong token, a wrong size and names Tessera does not make") {
  auto created = SharedSegment::Create(1024);
  REQUIRE(created.ok());
  const SharedSegment& a = **created;

  std::string token = a.token();
  token[0] ^= 1;
  auto wrong_token = SharedSegment::Open(a.name(), a.capacity(), token);
  CHECK(wrong_token.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(wrong_token.status().message()).find("token") != std::string::npos);

  auto wrong_size = SharedSegment::Open(a.name(), 2048, a.token());
  CHECK(wrong_size.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(wrong_size.status().message()).find("expected 2112") != std::string::npos);

  CHECK(SharedSegment::Open(a.name(), a.capacity(), "short").status().code() ==
        absl::StatusCode::kInvalidArgument);
  for (const std::string name : {"/dev/shm/x", "/other-name", "/tessera-../../etc", "tessera-1",
                                 "/tessera-a/b"}) {
    INFO(name);
    CHECK(SharedSegment::Open(name, a.capacity(), a.token()).status().code() ==
          absl::StatusCode::kInvalidArgument);
  }
  CHECK(SharedSegment::Open("/tessera-0-doesnotexist", 1024, a.token()).status().code() ==
        absl::StatusCode::kNotFound);
  CHECK(SharedSegment::Create(0).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Bytes checks bounds and alignment") {
  auto created = SharedSegment::Create(1024);
  REQUIRE(created.ok());
  const SharedSegment& a = **created;
  CHECK(a.Bytes(0, 1024).ok());
  CHECK(a.Bytes(1024, 0).ok());
  CHECK(a.Bytes(1016, 8).ok());
  for (auto [offset, bytes] : {std::pair<uint64_t, uint64_t>{0, 1025}, {1016, 9}, {1032, 0},
                               {4, 8}, {8, ~uint64_t{0}}, {~uint64_t{0} - 7, 16}}) {
    INFO(offset << " +" << bytes);
    CHECK(a.Bytes(offset, bytes).status().code() == absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("SIGTERM removes the names of a process's linked segments") {
  int pipe_fds[2];
  REQUIRE(pipe(pipe_fds) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // a worker waiting for its servers, then stopped
    SharedSegment::UnlinkOnTermination();
    auto a = SharedSegment::Create(4096);
    auto b = SharedSegment::Create(4096);
    auto gone = SharedSegment::Create(64);
    if (!a.ok() || !b.ok() || !gone.ok()) _exit(9);
    (*gone)->Unlink();
    const std::string names = (*a)->name() + " " + (*b)->name() + "\n";
    if (write(pipe_fds[1], names.data(), names.size()) < 0) _exit(9);
    raise(SIGTERM);
    _exit(8);  // not reached
  }
  close(pipe_fds[1]);
  char buffer[512] = {};
  REQUIRE(read(pipe_fds[0], buffer, sizeof(buffer) - 1) > 0);
  close(pipe_fds[0]);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGTERM);
  std::istringstream names(buffer);
  std::string name;
  int checked = 0;
  while (names >> name) {
    CHECK(access(("/dev/shm" + name).c_str(), F_OK) != 0);
    ++checked;
  }
  CHECK(checked == 2);
}

TEST_CASE("Open refuses a capacity beyond the limit before any arithmetic on it") {
  auto a = SharedSegment::Create(64);
  REQUIRE(a.ok());
  for (uint64_t lie : {~uint64_t{0}, ~uint64_t{0} - 31, SharedSegment::kMaxCapacity + 1}) {
    auto opened = SharedSegment::Open((*a)->name(), lie, (*a)->token());
    CHECK(opened.status().code() == absl::StatusCode::kInvalidArgument);
  }
  CHECK(SharedSegment::Open((*a)->name(), 128, (*a)->token()).status().code() ==
        absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace tessera
