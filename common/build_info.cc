#include "common/build_info.h"

#include "absl/strings/str_cat.h"

#ifndef TESSERA_REVISION
#define TESSERA_REVISION "unknown"
#endif

namespace tessera {

const BuildInfo& GetBuildInfo() {
  static const BuildInfo info{
      "0.17.0",
#ifdef TESSERA_WITH_CUDA
      "cuda",
#else
      "cpu",
#endif
      TESSERA_REVISION};
  return info;
}

std::string VersionLine(const std::string& program) {
  const BuildInfo& b = GetBuildInfo();
  return absl::StrCat(program, " ", b.version, " (", b.backend == "cuda" ? "CUDA" : "CPU-only",
                      " build, revision ", b.revision, ")");
}

}  // namespace tessera
