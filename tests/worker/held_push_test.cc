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
  HeldPushFile file(Path("whole"), "session-a");
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

TEST_CASE("a held push of another session is not loaded") {
  HeldPushFile mine(Path("other"), "session-a");
  REQUIRE(mine.Save(5, 4, {{1, 2, 3, 4}}, nullptr).ok());
  // An earlier run's worker at the same path had another session.
  CHECK(!HeldPushFile(Path("other"), "session-b").Load());
  REQUIRE(mine.Load());
  mine.Remove();
  CHECK(!mine.Load());
}

TEST_CASE("a save cut short at any byte leaves the push before it") {
  // Pushes go to the two slots in turn, written in place: a kill while one
  // is written leaves a prefix of the new push over the old one's bytes.
  HeldPushFile file(Path("torn"), "session-a");
  REQUIRE(file.Save(1, std::nullopt, {{1, 2, 3, 4}}, nullptr).ok());
  const std::string first = ReadAll(file.SlotPath(1));  // the first push's slot
  REQUIRE(!first.empty());
  REQUIRE(file.Save(2, std::nullopt, {{5, 6, 7, 8}}, nullptr).ok());
  REQUIRE(file.Save(3, std::nullopt, {{9, 10, 11, 12}}, nullptr).ok());  // over the first
  const std::string third = ReadAll(file.SlotPath(1));
  REQUIRE(third.size() == first.size());
  for (size_t n = 0; n <= third.size(); ++n) {
    INFO(n << " of " << third.size() << " bytes written");
    std::ofstream(file.SlotPath(1), std::ios::binary | std::ios::trunc)
        << third.substr(0, n) + first.substr(n);
    std::optional<HeldPush> back = file.Load();
    REQUIRE(back);
    CHECK(back->clock == (n == third.size() ? 3 : 2));
  }
  // A slot cut off at any length (a file copied short) is skipped too.
  for (size_t n = 0; n < third.size(); ++n) {
    std::ofstream(file.SlotPath(1), std::ios::binary | std::ios::trunc) << third.substr(0, n);
    std::optional<HeldPush> back = file.Load();
    REQUIRE(back);
    CHECK(back->clock == 2);
  }
  // Neither slot whole: nothing.
  std::ofstream(file.SlotPath(0), std::ios::binary | std::ios::trunc) << third.substr(0, 40);
  CHECK(!file.Load());
  file.Remove();
}

TEST_CASE("a restarted worker's saves come after its last life's") {
  {
    HeldPushFile before(Path("restart"), "session-a");
    for (int64_t clock = 0; clock < 5; ++clock) {
      REQUIRE(before.Save(clock, std::nullopt, {{float(clock)}}, nullptr).ok());
    }
  }
  HeldPushFile after(Path("restart"), "session-a");
  std::optional<HeldPush> back = after.Load();
  REQUIRE(back);
  CHECK(back->clock == 4);
  // Saved once, it must win over both older slots, whichever it overwrote.
  REQUIRE(after.Save(5, std::nullopt, {{5.0f}}, nullptr).ok());
  back = after.Load();
  REQUIRE(back);
  CHECK(back->clock == 5);
  after.Remove();
  CHECK(!after.Load());
  CHECK(ReadAll(after.SlotPath(0)).empty());
  CHECK(ReadAll(after.SlotPath(1)).empty());
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
