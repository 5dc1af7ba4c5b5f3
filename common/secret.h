// Secrets: random bytes from the kernel, a job token read from a file, and a
// comparison that takes the same time wherever two secrets differ.
//
//   auto session = RandomBytes(16);                 // a worker's registration secret
//   auto token = ReadToken("/var/run/tessera/token");
//   if (!SecretsEqual(*token, presented)) ...
//
// Pure functions; thread-safe.
#ifndef TESSERA_COMMON_SECRET_H_
#define TESSERA_COMMON_SECRET_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tessera {

// `n` bytes from getrandom(2). INTERNAL when the kernel refuses.
absl::StatusOr<std::string> RandomBytes(size_t n);

// RandomBytes as lowercase hex (2n characters): a token that fits a header.
absl::StatusOr<std::string> RandomHex(size_t n);

// The token in `path`: its content less surrounding whitespace, which must be
// 16 to 4096 printable ASCII characters (an HTTP header value).
// NOT_FOUND when the file cannot be read, INVALID_ARGUMENT when it is empty,
// too short, too long or holds anything else.
absl::StatusOr<std::string> ReadToken(const std::string& path);

// a == b, in time that depends only on the lengths.
bool SecretsEqual(absl::string_view a, absl::string_view b);

}  // namespace tessera

#endif  // TESSERA_COMMON_SECRET_H_
