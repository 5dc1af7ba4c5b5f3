// The registration secret worker w carries in the server tests
// (RegisterRequest.session): 16 bytes, never all zero. Test-only.
#ifndef TESSERA_TESTS_SERVER_TEST_SESSION_H_
#define TESSERA_TESTS_SERVER_TEST_SESSION_H_

#include <cstdint>
#include <string>

namespace tessera {

inline std::string SessionOf(uint32_t worker) {
  std::string s = "test-session-" + std::to_string(worker);
  s.resize(16, '#');
  return s;
}

}  // namespace tessera

#endif  // TESSERA_TESTS_SERVER_TEST_SESSION_H_
