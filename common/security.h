// Transport security for every Tessera connection (config `security`,
// docs/deploy.md "Security"): TLS credentials for channels and servers, and
// the job token every call carries.
//
//   auto security = TransportSecurity::ForJob(config);     // at start-up
//   server:  builder.AddListeningPort(addr, security->ServerCredentials(), &port);
//            if (!security->Admits(context)) -> UNAUTHENTICATED
//   worker:  auto channel = security->Channel(address, args);   // token attached to each call
//
// TLS goes through gRPC's TLS credentials with a FileWatcherCertificateProvider:
// the files are re-read every security.tls.reload_s seconds, so a renewed
// certificate (cert-manager rewrites the mounted Secret) is picked up without a
// restart. The token travels as "authorization: Bearer <token>" metadata, added
// by a client interceptor to every call of the channel and checked by the
// shard service before it looks at the request. gRPC's AuthMetadataProcessor
// would be the library's hook, but Debian's gRPC (1.51) cannot install one on
// insecure server credentials, and the token must work without TLS too; the
// health service is a separate service and needs no token, so probes work.
//
// Immutable after ForJob; safe to share between threads.
#ifndef TESSERA_COMMON_SECURITY_H_
#define TESSERA_COMMON_SECURITY_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/config.h"

namespace tessera {

class TransportSecurity {
 public:
  // Reads the token file and checks that the certificate files exist.
  // INVALID_ARGUMENT / NOT_FOUND naming the key when a file cannot be used.
  static absl::StatusOr<std::shared_ptr<const TransportSecurity>> ForJob(const JobConfig& config);

  // No TLS, no token (tests, tools).
  static std::shared_ptr<const TransportSecurity> Plaintext();

  std::shared_ptr<grpc::ServerCredentials> ServerCredentials() const;
  // A channel to `address` with these credentials and the shared transport
  // settings (common/transport.h); every call carries the token.
  std::shared_ptr<grpc::Channel> Channel(const std::string& address, int64_t max_message_bytes,
                                         int channel_id) const;

  // Whether a call's metadata carries the job's token (always, without one).
  bool Admits(const grpc::ServerContextBase& context) const;

  bool tls() const { return tls_.enabled(); }
  bool has_token() const { return !token_.empty(); }

 private:
  TransportSecurity() = default;

  TlsConfig tls_;
  std::string token_;  // empty: none
};

}  // namespace tessera

#endif  // TESSERA_COMMON_SECURITY_H_
