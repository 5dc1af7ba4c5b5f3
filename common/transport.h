// gRPC transport settings shared by every Tessera channel and server, so that
// both ends of a connection agree. Large parameter transfers are bound by
// HTTP/2 flow control and TCP read chunking long before CPU or loopback
// bandwidth; these widen both (see docs/PERFORMANCE.md for the effect).
//
// Pure functions; call while building a channel or server.
#ifndef TESSERA_COMMON_TRANSPORT_H_
#define TESSERA_COMMON_TRANSPORT_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>

namespace tessera {

// While a client's calls are in flight, it pings the server this often and
// fails them when a ping is not answered within the timeout (a peer cut off).
inline constexpr int kKeepaliveTimeMs = 1000;
inline constexpr int kKeepaliveTimeoutMs = 2000;

// Channel arguments for a client channel; `channel_id` makes channels to the
// same address distinct connections (gRPC would otherwise share one).
grpc::ChannelArguments ClientChannelArgs(int64_t max_message_bytes, int channel_id);

// The same settings on a server under construction, the bounds on idle
// connections (10 s to finish the handshake, 5 minutes without a call), and
// leave for the clients' keepalive pings.
void ApplyServerTransport(grpc::ServerBuilder* builder, int64_t max_message_bytes);

// Whether `address` ("host:port") names this host by a loopback name:
// localhost, 127.x.y.z or [::1].
bool IsLoopbackAddress(const std::string& address);

}  // namespace tessera

#endif  // TESSERA_COMMON_TRANSPORT_H_
