// Shell commands from the tests (e2e and deploy): test-only.
#ifndef TESSERA_TESTS_SHELL_H_
#define TESSERA_TESTS_SHELL_H_

#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <string>

namespace tessera {

// Runs a shell command; its stdout, and its exit status in *status (-1 when
// it did not exit normally). Redirect stderr in `command` to capture it too.
inline std::string Shell(const std::string& command, int* status) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int raw = pclose(p);
  *status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return out;
}

}  // namespace tessera

#endif  // TESSERA_TESTS_SHELL_H_
