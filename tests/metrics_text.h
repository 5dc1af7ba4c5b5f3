// Test helpers for the metrics endpoints: a free loopback port, and one
// sample's value in a Prometheus text exposition. Test-only.
#ifndef TESSERA_TESTS_METRICS_TEXT_H_
#define TESSERA_TESTS_METRICS_TEXT_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

namespace tessera {

// A loopback port free now (the caller binds it a moment later).
inline int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  close(fd);
  return ntohs(addr.sin_port);
}

// The value of the one sample line that starts with `series` (its name and
// labels, e.g. `x_total{job="j"}`); fails the test when there is none.
inline double SampleValue(const std::string& text, const std::string& series) {
  const size_t at = text.find("\n" + series + " ");
  INFO(series);
  REQUIRE(at != std::string::npos);
  const size_t begin = at + series.size() + 2;
  return std::stod(text.substr(begin, text.find('\n', begin) - begin));
}

}  // namespace tessera

#endif  // TESSERA_TESTS_METRICS_TEXT_H_
