// HeldPushFile (worker/held_push.h): a worker's last push kept in /dev/shm
// for a restart of the worker while a shard fails over.
#include "worker/held_push.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <string>

namespace tessera {
namespace {

std::string Path(const std::string& name) {
  return "/dev/shm/tessera-held-test-" + std::to_string(getpid()) + "-" + name;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST_CASE("a held push comes back whole: dense tables, rows, clocks") {
  const HeldPushFile file(Path("whole"), "session-a");
  ParameterSet grads = {{1.5f, -2.0f, 3.25f}, {}, {1e-30f}};
  RowSet rows(2);
  rows[0] = {.table = 2, .dim = 2, .keys = {7, 1ULL << 40}, .values = {0.5f, 1, 2, -3}};
  rows[1] = {.table = 3, .dim = 1, .keys = {9}, .values = {4}};
  REQUIRE(file.Save(41, 40, grads, &rows).ok());
  std::optional<HeldPush> back = file.Load();
  REQUIRE(back);
  CHECK(back->clock == 41);
  CHECK(back->values_clock == std::optional<int64_t>(40));
  CHECK(back->grads == grads);
  REQUIRE(back->rows.size() == 2);
  CHECK(back->rows[0].table == 2);
  CHECK(back->rows[0].dim == 2);
  CHECK(back->rows[0].keys == rows[0].keys);
  CHECK(back->rows[0].values == rows[0].values);
  CHECK(back->rows[1].values == rows[1].values);

  // The next push replaces it; without rows or values clock, none come back.
  REQUIRE(file.Save(42, std::nullopt, {{9.0f}}, nullptr).ok());
  back = file.Load();
  REQUIRE(back);
  CHECK(back->clock == 42);
  CHECK(!back->values_clock);
  CHECK(back->grads == ParameterSet{{9.0f}});
  CHECK(back->rows.empty());
  file.Remove();
  CHECK(!file.Load());
}

TEST_CASE("a held push of another session, or one cut short, is not loaded") {
  const HeldPushFile mine(Path("other"), "session-a");
  REQUIRE(mine.Save(5, 4, {{1, 2, 3, 4}}, nullptr).ok());
  // An earlier run's worker at the same path had another session.
  CHECK(!HeldPushFile(Path("other"), "session-b").Load());
  REQUIRE(mine.Load());
  // Every prefix of the file is refused (a file is renamed into place whole,
  // but a copy or a full disk could cut one), and so is a byte too many.
  const std::string whole = ReadAll(Path("other"));
  for (size_t n = 0; n < whole.size(); ++n) {
    std::ofstream(Path("other"), std::ios::binary | std::ios::trunc) << whole.substr(0, n);
    INFO(n << " of " << whole.size() << " bytes");
    CHECK(!mine.Load());
  }
  std::ofstream(Path("other"), std::ios::binary | std::ios::trunc) << whole << 'x';
  CHECK(!mine.Load());
  mine.Remove();
}

TEST_CASE("a held push's path is the rank's, from the session file's absolute path") {
  const std::string a = HeldPushFile::PathFor("runs/job/session-rank0", 0);
  CHECK(a.rfind("/dev/shm/tessera-held-", 0) == 0);
  CHECK(a.size() > std::string("/dev/shm/tessera-held-").size());
  CHECK(a.substr(a.size() - 3) == "-r0");
  CHECK(HeldPushFile::PathFor("runs/job/session-rank0", 0) == a);
  CHECK(HeldPushFile::PathFor("runs/job/session-rank1", 1) != a);
  CHECK(HeldPushFile::PathFor("runs/other/session-rank0", 0) != a);
}

}  // namespace
}  // namespace tessera
