// Process limits a daemon sets for itself at start-up.
//
//   if (auto raised = RaiseDescriptorLimit(); raised.ok()) log(*raised);
//
// Threading: call from main() before other threads open descriptors.
#ifndef TESSERA_COMMON_PROCESS_LIMITS_H_
#define TESSERA_COMMON_PROCESS_LIMITS_H_

#include <cstdint>
#include <string>

namespace tessera {

struct DescriptorLimit {
  uint64_t before = 0;  // the soft limit found
  uint64_t now = 0;     // the soft limit set (the hard limit, or as close as allowed)
};

// Raises this process's soft RLIMIT_NOFILE to its hard limit. A common
// default soft limit is 1,024: about a thousand idle TCP connections from
// anyone who can reach a daemon's ports would then make accept() fail and
// shut out the job's own workers and scrapers. Every library the daemons
// use waits on descriptors with poll or epoll (gRPC, Debian's cpp-httplib
// build), never select(), so descriptors above 1,024 are safe. Never lowers.
DescriptorLimit RaiseDescriptorLimit();

// "open files: soft limit 1024 raised to 20000 (hard limit 20000)": one
// start-up log line.
std::string Describe(const DescriptorLimit& limit);

}  // namespace tessera

#endif  // TESSERA_COMMON_PROCESS_LIMITS_H_
