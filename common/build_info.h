// What this binary is: Tessera's version, its compute backend (CUDA or
// CPU-only) and the git revision it was built from when the build said so
// (scripts/run_demo.sh passes --per_file_copt=common/build_info.cc@-DTESSERA_REVISION=...;
// a plain `bazel build` leaves it "unknown" so that a commit does not
// rebuild the world). Used by --version and tessera_build_info.
#ifndef TESSERA_COMMON_BUILD_INFO_H_
#define TESSERA_COMMON_BUILD_INFO_H_

#include <string>

namespace tessera {

struct BuildInfo {
  std::string version;   // e.g. "0.17.0"
  std::string backend;   // "cuda" or "cpu"
  std::string revision;  // git revision, or "unknown"
};

const BuildInfo& GetBuildInfo();
// One line: "<program> 0.17.0 (cuda build, revision abc1234)".
std::string VersionLine(const std::string& program);

}  // namespace tessera

#endif  // TESSERA_COMMON_BUILD_INFO_H_
