#include "common/metrics_server.h"

#include <httplib.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/secret.h"
#include "common/status.h"

namespace tessera {

// The certificate, key and CA a daemon's HTTPS metrics port serves, re-read
// from disk when the files change (checked at most every reload_s), as the
// gRPC port's FileWatcherCertificateProvider does. OpenSSL asks for it on
// each handshake (SSL_CTX_set_cert_cb), from httplib's request threads.
class ServingCertificate {
 public:
  // Reads the files once: INVALID_ARGUMENT naming the key of one that is
  // not PEM, or a key that does not match the certificate.
  static absl::StatusOr<std::shared_ptr<ServingCertificate>> Load(const TlsConfig& tls) {
    std::shared_ptr<ServingCertificate> c(new ServingCertificate(tls));
    absl::MutexLock lock(&c->mu_);
    absl::Status s = c->ReadLocked();
    if (!s.ok()) return s;
    return c;
  }

  ~ServingCertificate() { Clear(); }

  // On a handshake: the current certificate, chain, key (and the CA that
  // client certificates are checked against) for `ssl`. Returns 1 on
  // success, as OpenSSL's cert callback must.
  int Use(SSL* ssl) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    const auto now = std::chrono::steady_clock::now();
    if (now - checked_ >= std::chrono::seconds(tls_.reload_s)) {
      checked_ = now;
      if (Stamp() != stamp_) {
        // A file half-written by a renewal fails to parse: keep serving
        // the last good one and try again at the next check.
        (void)ReadLocked();
      }
    }
    if (SSL_use_cert_and_key(ssl, cert_, key_, chain_, 1) != 1) return 0;
    if (store_ != nullptr && SSL_set1_verify_cert_store(ssl, store_) != 1) return 0;
    return 1;
  }

 private:
  explicit ServingCertificate(const TlsConfig& tls) : tls_(tls) {}

  // The files' modification times and sizes, to notice a renewal.
  std::string Stamp() const {
    std::string stamp;
    for (const std::string* path : {&tls_.cert_file, &tls_.key_file, &tls_.ca_file}) {
      struct stat st {};
      if (!path->empty() && stat(path->c_str(), &st) == 0) {
        absl::StrAppend(&stamp, st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec, ":", st.st_size, ";");
      }
    }
    return stamp;
  }

  absl::Status ReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::string stamp = Stamp();
    auto bad = [](const char* key, const std::string& path, const char* expected) {
      ERR_clear_error();
      return absl::InvalidArgumentError(
          absl::StrCat("config: ", key, " = '", path, "': expected ", expected));
    };
    X509* cert = nullptr;
    STACK_OF(X509)* chain = sk_X509_new_null();
    EVP_PKEY* key = nullptr;
    X509_STORE* store = nullptr;
    auto drop = [&] {
      X509_free(cert);
      sk_X509_pop_free(chain, X509_free);
      EVP_PKEY_free(key);
      X509_STORE_free(store);
    };
    if (BIO* in = BIO_new_file(tls_.cert_file.c_str(), "r")) {
      cert = PEM_read_bio_X509_AUX(in, nullptr, nullptr, nullptr);
      while (X509* next = PEM_read_bio_X509(in, nullptr, nullptr, nullptr)) {
        sk_X509_push(chain, next);
      }
      BIO_free(in);
    }
    if (cert == nullptr) {
      drop();
      return bad("security.tls.cert_file", tls_.cert_file, "a PEM certificate");
    }
    if (BIO* in = BIO_new_file(tls_.key_file.c_str(), "r")) {
      key = PEM_read_bio_PrivateKey(in, nullptr, nullptr, nullptr);
      BIO_free(in);
    }
    if (key == nullptr || X509_check_private_key(cert, key) != 1) {
      drop();
      return bad("security.tls.key_file", tls_.key_file,
                 "the PEM private key of security.tls.cert_file");
    }
    if (tls_.mutual) {
      store = X509_STORE_new();
      if (store == nullptr || X509_STORE_load_file(store, tls_.ca_file.c_str()) != 1) {
        drop();
        return bad("security.tls.ca_file", tls_.ca_file, "PEM CA certificates");
      }
    }
    Clear();
    cert_ = cert;
    chain_ = chain;
    key_ = key;
    store_ = store;
    stamp_ = stamp;
    ERR_clear_error();
    return absl::OkStatus();
  }

  void Clear() ABSL_NO_THREAD_SAFETY_ANALYSIS {  // under mu_, or from the destructor
    X509_free(cert_);
    sk_X509_pop_free(chain_, X509_free);
    EVP_PKEY_free(key_);
    X509_STORE_free(store_);
    cert_ = nullptr;
    chain_ = nullptr;
    key_ = nullptr;
    store_ = nullptr;
  }

  const TlsConfig tls_;
  absl::Mutex mu_;
  X509* cert_ ABSL_GUARDED_BY(mu_) = nullptr;
  STACK_OF(X509)* chain_ ABSL_GUARDED_BY(mu_) = nullptr;
  EVP_PKEY* key_ ABSL_GUARDED_BY(mu_) = nullptr;
  X509_STORE* store_ ABSL_GUARDED_BY(mu_) = nullptr;  // mutual TLS only
  std::string stamp_ ABSL_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point checked_ ABSL_GUARDED_BY(mu_) =
      std::chrono::steady_clock::now();
};

namespace {

// httplib hands each accepted connection to a task queue, and a connection
// holds its thread until it closes (up to the keep-alive timeout when
// idle). Its own pool is first come, first served: behind N idle sockets a
// scrape waits N x timeout / threads. This one serves the newest
// connection first (adaptive LIFO): a client that just connected is the
// one still waiting, and a flood of idle sockets delays it by one timeout.
// Every connection is still served (its task closes the socket), oldest
// last; after stop(), httplib's tasks close their sockets without waiting.
class NewestFirstQueue : public httplib::TaskQueue {
 public:
  explicit NewestFirstQueue(size_t threads) {
    for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
  }

  void enqueue(std::function<void()> task) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(std::move(task));
    }
    ready_.notify_one();
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

 private:
  void Work() {
    while (true) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        ready_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;  // stopping, and nothing left to close
        task = std::move(tasks_.back());
        tasks_.pop_back();
      }
      task();
    }
  }

  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> threads_;
};

absl::StatusOr<std::string> ReadScrapeToken(const std::string& path) {
  if (path.empty()) return std::string();
  absl::StatusOr<std::string> token = ReadToken(path);
  if (!token.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config: security.metrics_token_file = '", path,
                                                   "': ", token.status().message()));
  }
  return token;
}

}  // namespace

absl::StatusOr<MetricsAccess> MetricsAccessFor(const JobConfig& config) {
  MetricsAccess access;
  TESSERA_ASSIGN_OR_RETURN(access.bearer_token,
                           ReadScrapeToken(config.security.metrics_token_file));
  access.tls = config.security.tls;
  return access;
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& host, int port, const MetricsRegistry* registry, const std::string& what,
    const MetricsAccess& access) {
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  if (access.https()) {
    TESSERA_ASSIGN_OR_RETURN(server->certificate_, ServingCertificate::Load(access.tls));
    const bool mutual = access.tls.mutual;
    server->http_ = std::make_unique<httplib::SSLServer>(
        [certificate = server->certificate_.get(), mutual](SSL_CTX& ctx) {
          SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
          SSL_CTX_set_cert_cb(
              &ctx,
              [](SSL* ssl, void* arg) { return static_cast<ServingCertificate*>(arg)->Use(ssl); },
              certificate);
          if (mutual) {
            SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
          }
          return true;
        });
    if (!server->http_->is_valid()) {
      return absl::InternalError(absl::StrCat("metrics on ", host, ":", port, " (", what,
                                              "): OpenSSL could not set up a TLS context"));
    }
  } else {
    server->http_ = std::make_unique<httplib::Server>();
  }
  httplib::Server& http = *server->http_;
  // Four threads: a scrape is a few hundred microseconds; the others keep
  // stuck or idle clients from stopping the next scrape (NewestFirstQueue).
  http.new_task_queue = [] { return new NewestFirstQueue(4); };
  // httplib's default also sets SO_REUSEPORT, which would let two daemons
  // share a port silently; a port in use must fail here instead.
  auto listener = std::make_shared<int>(-1);  // the socket bound below
  http.set_socket_options([listener](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    *listener = sock;
  });
  // One request per connection ("Connection: close"; Prometheus connects
  // for each scrape, a few a minute), and its first bytes must be there
  // when the connection is served: a client sends its request right after
  // connecting, so a keep-alive timeout of 0 (httplib then waits 10 ms)
  // loses no scraper, while an idle socket holds a thread for 10 ms, not
  // seconds. A TLS handshake and a request must then arrive within 1 s.
  http.set_keep_alive_max_count(1);
  http.set_keep_alive_timeout(0);
  http.set_read_timeout(1, 0);
  http.set_write_timeout(5, 0);
  http.Get("/metrics", [registry, expected = "Bearer " + access.bearer_token,
                        open = access.bearer_token.empty()](const httplib::Request& req,
                                                             httplib::Response& res) {
    if (!open && !SecretsEqual(req.get_header_value("Authorization"), expected)) {
      res.status = 401;
      res.set_header("WWW-Authenticate", "Bearer");
      res.set_content("a bearer token is required (security.metrics_token_file)\n", "text/plain");
      return;
    }
    res.set_content(registry->Render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  const std::string address = absl::StrCat(host, ":", port);
  if (port == 0) {
    server->port_ = http.bind_to_any_port(host.c_str());
  } else {
    server->port_ = http.bind_to_port(host.c_str(), port) ? port : -1;
  }
  if (server->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", address, " (", what,
                                               "): the port is in use or the host is not local"));
  }
  // httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, fixed
  // when Debian built it): a burst of connections overflows it and each SYN
  // dropped costs its client a 1 s retransmission. Listening again on the
  // bound socket raises the backlog (Linux).
  if (*listener >= 0) listen(*listener, SOMAXCONN);
  server->thread_ = std::thread([&http] { http.listen_after_bind(); });
  // httplib's stop() does nothing until the listening loop has begun (and
  // the loop would then run forever): return only once it has.
  for (int i = 0; i < 5000 && !http.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!http.is_running()) {
    return absl::InternalError(absl::StrCat("metrics on ", address, " (", what,
                                            "): the HTTP server did not start within 5 s"));
  }
  return server;
}

MetricsServer::~MetricsServer() {
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace tessera
