// Flag parsing and identity from flags or the environment.
#include <catch2/catch.hpp>
#include <cstdlib>

#include "common/flags.h"
#include "common/identity.h"

namespace tessera {
namespace {

absl::StatusOr<Flags> Parse(std::vector<std::string> args) {
  std::vector<char*> argv = {const_cast<char*>("prog")};
  for (auto& a : args) argv.push_back(a.data());
  return ParseFlags(static_cast<int>(argv.size()), argv.data(), {"config", "shard"}, {"set"});
}

TEST_CASE("flags take --name value and --name=value; --set repeats") {
  auto f = Parse({"--config", "a.yaml", "--set", "x=1", "--set=y=2", "--shard=3", "pos"});
  REQUIRE(f.ok());
  CHECK(f->Get("config") == "a.yaml");
  CHECK(f->All("set") == std::vector<std::string>{"x=1", "y=2"});
  CHECK(**f->GetInt("shard") == 3);
  CHECK(f->positional() == std::vector<std::string>{"pos"});
}

TEST_CASE("unknown, repeated, valueless and non-numeric flags are errors") {
  CHECK(Parse({"--confg", "a"}).status().message() ==
        "unknown flag --confg; expected one of --config --shard --set");
  CHECK(Parse({"--config", "a", "--config", "b"}).status().message() == "--config given twice");
  CHECK(Parse({"--config"}).status().message() == "--config: expected a value");
  auto f = Parse({"--shard", "x"});
  REQUIRE(f.ok());
  CHECK(f->GetInt("shard").status().message() == "--shard = 'x': expected a non-negative integer");
  // Never wrapped into range: 2^32 is not shard 0.
  auto big = Parse({"--shard", "4294967296"});
  REQUIRE(big.ok());
  CHECK(big->GetInt("shard", 4095).status().message() ==
        "--shard = '4294967296': expected a non-negative integer <= 4095");
  CHECK(**big->GetInt("shard") == 4294967296);
  auto negative = Parse({"--shard=-1"});
  REQUIRE(negative.ok());
  CHECK_FALSE(negative->GetInt("shard", 4095).ok());
}

TEST_CASE("ordinals come from StatefulSet pod names") {
  CHECK(OrdinalOf("tessera-server-3") == 3u);
  CHECK(OrdinalOf("tessera-server-12.tessera-server.ns.svc") == 12u);
  CHECK_FALSE(OrdinalOf("laptop").has_value());
  CHECK_FALSE(OrdinalOf("tessera-server-x").has_value());
}

TEST_CASE("flags win over the environment") {
  setenv("POD_NAME", "tessera-server-4", 1);
  CHECK(*ResolveShardIndex(std::nullopt) == 4u);
  CHECK(*ResolveShardIndex(int64_t{1}) == 1u);
  unsetenv("POD_NAME");
  setenv("HOSTNAME", "plainhost", 1);
  CHECK_FALSE(ResolveShardIndex(std::nullopt).ok());

  setenv("JOB_COMPLETION_INDEX", "6", 1);
  CHECK(*ResolveWorkerRank(std::nullopt) == 6u);
  CHECK(*ResolveWorkerRank(int64_t{2}) == 2u);
  setenv("JOB_COMPLETION_INDEX", "six", 1);
  CHECK(ResolveWorkerRank(std::nullopt).status().message() ==
        "JOB_COMPLETION_INDEX = 'six': expected a non-negative integer");
  unsetenv("JOB_COMPLETION_INDEX");
  CHECK_FALSE(ResolveWorkerRank(std::nullopt).ok());
}

}  // namespace
}  // namespace tessera
