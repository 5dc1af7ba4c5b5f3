// Test helpers for the metrics endpoints: a free loopback port, and one
// sample's value in a Prometheus text exposition. Test-only.
#ifndef TESSERA_TESTS_METRICS_TEXT_H_
#define TESSERA_TESTS_METRICS_TEXT_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <random>
#include <string>

namespace tessera {

// A loopback port free now (the caller binds it a moment later), drawn at
// random below the kernel's ephemeral range (ip_local_port_range starts at
// 32768 by default): a port from bind(0) could be handed out again by the
// kernel, to another test's bind(0) or as the local port of any outgoing
// connection, before the caller binds it (a test once talked to another
// test's server that way). Here only two tests drawing the same port within
// that moment collide.
inline int FreeLoopbackPort() {
  static thread_local std::mt19937 rng(std::random_device{}());
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int port = std::uniform_int_distribution<int>(20000, 32000)(rng);
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    const bool free = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(fd);
    if (free) return port;
  }
  FAIL("no free loopback port in [20000, 32000] after 200 draws");
  return 0;
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
