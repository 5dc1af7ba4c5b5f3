#include "common/process_limits.h"

#include <sys/resource.h>

#include "absl/strings/str_cat.h"

namespace tessera {

DescriptorLimit RaiseDescriptorLimit() {
  DescriptorLimit result;
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return result;
  result.before = result.now = limit.rlim_cur;
  if (limit.rlim_cur >= limit.rlim_max) return result;
  // RLIM_INFINITY is refused for RLIMIT_NOFILE (fs.nr_open caps it): step
  // down from the hard limit until the kernel takes one.
  for (rlim_t target = limit.rlim_max; target > limit.rlim_cur; target /= 2) {
    rlimit raised{target, limit.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      result.now = target;
      break;
    }
  }
  return result;
}

std::string Describe(const DescriptorLimit& limit) {
  rlimit now{};
  getrlimit(RLIMIT_NOFILE, &now);
  const std::string hard = now.rlim_max == RLIM_INFINITY ? std::string("unlimited")
                                                         : absl::StrCat(now.rlim_max);
  if (limit.now > limit.before) {
    return absl::StrCat("open files: soft limit ", limit.before, " raised to ", limit.now,
                        " (hard limit ", hard, ")");
  }
  return absl::StrCat("open files: soft limit ", limit.now, " (hard limit ", hard, ")");
}

}  // namespace tessera
