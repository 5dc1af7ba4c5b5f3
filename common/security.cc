#include "common/security.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <grpcpp/support/client_interceptor.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/secret.h"
#include "common/transport.h"

namespace tessera {
namespace {

constexpr char kAuthorization[] = "authorization";
constexpr char kBearer[] = "Bearer ";

// Adds the token to the initial metadata of every call on its channel.
class TokenInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace(kAuthorization, *header_);
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;  // owned by the factory, which the channel keeps
};

class TokenInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(const std::string& token) : header_(kBearer + token) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new TokenInterceptor(&header_);
  }

 private:
  const std::string header_;
};

absl::Status CheckReadable(const std::string& key, const std::string& path) {
  if (path.empty() || access(path.c_str(), R_OK) == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("config: ", key, " = '", path,
                                                 "': expected a readable PEM file"));
}

std::shared_ptr<grpc::experimental::CertificateProviderInterface> Provider(const TlsConfig& tls,
                                                                          bool identity) {
  using grpc::experimental::FileWatcherCertificateProvider;
  if (identity) {
    return std::make_shared<FileWatcherCertificateProvider>(
        tls.key_file, tls.cert_file, tls.ca_file, tls.reload_s);
  }
  return std::make_shared<FileWatcherCertificateProvider>(
      tls.ca_file, tls.reload_s);
}

}  // namespace

absl::StatusOr<std::shared_ptr<const TransportSecurity>> TransportSecurity::ForJob(
    const JobConfig& config) {
  std::shared_ptr<TransportSecurity> security(new TransportSecurity());
  security->tls_ = config.security.tls;
  const TlsConfig& tls = security->tls_;
  for (const auto& [key, path] : {std::pair<std::string, std::string>{"security.tls.cert_file",
                                                                      tls.cert_file},
                                  {"security.tls.key_file", tls.key_file},
                                  {"security.tls.ca_file", tls.ca_file}}) {
    absl::Status readable = CheckReadable(key, path);
    if (!readable.ok()) return readable;
  }
  if (!config.security.token_file.empty()) {
    absl::StatusOr<std::string> token = ReadToken(config.security.token_file);
    if (!token.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(absl::StartsWith(token.status().message(), "config: ") ? "" : "config: ",
                       token.status().message()));
    }
    security->token_ = *std::move(token);
  }
  return std::shared_ptr<const TransportSecurity>(std::move(security));
}

std::shared_ptr<const TransportSecurity> TransportSecurity::Plaintext() {
  return std::shared_ptr<const TransportSecurity>(new TransportSecurity());
}

std::shared_ptr<grpc::ServerCredentials> TransportSecurity::ServerCredentials() const {
  if (!tls_.enabled()) return grpc::InsecureServerCredentials();
  grpc::experimental::TlsServerCredentialsOptions options(Provider(tls_, /*identity=*/true));
  options.watch_identity_key_cert_pairs();
  if (tls_.mutual) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

std::shared_ptr<grpc::Channel> TransportSecurity::Channel(const std::string& address,
                                                          int64_t max_message_bytes,
                                                          int channel_id) const {
  grpc::ChannelArguments args = ClientChannelArgs(max_message_bytes, channel_id);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (!tls_.enabled()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::experimental::TlsChannelCredentialsOptions options;
    // A worker with a certificate of its own presents it (mutual TLS).
    const bool identity = !tls_.cert_file.empty() && tls_.mutual;
    options.set_certificate_provider(Provider(tls_, identity));
    options.watch_root_certs();
    if (identity) options.watch_identity_key_cert_pairs();
    options.set_verify_server_certs(true);
    if (!tls_.server_name.empty()) {
      args.SetSslTargetNameOverride(tls_.server_name);
    }
    credentials = grpc::experimental::TlsCredentials(options);
  }
  if (token_.empty()) return grpc::CreateCustomChannel(address, credentials, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<TokenInterceptorFactory>(token_));
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, credentials, args,
                                                                 std::move(interceptors));
}

bool TransportSecurity::Admits(const grpc::ServerContextBase& context) const {
  if (token_.empty()) return true;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kAuthorization);
  if (it == metadata.end()) return false;
  const absl::string_view value(it->second.data(), it->second.size());
  if (!absl::StartsWith(value, kBearer)) return false;
  return SecretsEqual(value.substr(sizeof(kBearer) - 1), token_);
}

}  // namespace tessera
