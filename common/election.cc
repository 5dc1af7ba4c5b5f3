#include "common/election.h"

#include <httplib.h>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

using nlohmann::json;

// etcd's JSON gateway writes int64 fields as strings, and leaves out zeros.
int64_t Int(const json& j, const char* field) {
  if (!j.is_object() || !j.contains(field)) return 0;
  const json& v = j[field];
  if (v.is_number_integer()) return v.get<int64_t>();
  int64_t out = 0;
  if (v.is_string() && absl::SimpleAtoi(v.get<std::string>(), &out)) return out;
  return 0;
}

std::string Decode(const json& j, const char* field) {
  std::string out;
  if (j.is_object() && j.contains(field) && j[field].is_string()) {
    absl::Base64Unescape(j[field].get<std::string>(), &out);
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Election>> Election::Create(const std::string& endpoint,
                                                           const std::string& key,
                                                           const std::string& name, int64_t ttl_s,
                                                           absl::Duration timeout) {
  const size_t colon = endpoint.rfind(':');
  int port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(endpoint.substr(colon + 1), &port) || port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("etcd endpoint '", endpoint, "': expected host:port"));
  }
  if (key.empty() || name.empty()) {
    return absl::InvalidArgumentError("an election needs a key and a candidate name");
  }
  if (ttl_s < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("election ttl ", ttl_s, " s: expected at least 1"));
  }
  return std::unique_ptr<Election>(new Election(endpoint, key, name, ttl_s, timeout));
}

Election::Election(std::string endpoint, std::string key, std::string name, int64_t ttl_s,
                   absl::Duration timeout)
    : host_(endpoint.substr(0, endpoint.rfind(':'))),
      port_(std::stoi(endpoint.substr(endpoint.rfind(':') + 1))),
      key_(absl::Base64Escape(key)),
      name_(std::move(name)),
      ttl_s_(ttl_s),
      timeout_(timeout) {}

Election::~Election() = default;

absl::StatusOr<std::string> Election::Post(const std::string& path, const std::string& body) const {
  httplib::Client client(host_, port_);
  const int64_t us = absl::ToInt64Microseconds(timeout_);
  client.set_connection_timeout(us / 1'000'000, us % 1'000'000);
  client.set_read_timeout(us / 1'000'000, us % 1'000'000);
  client.set_write_timeout(us / 1'000'000, us % 1'000'000);
  auto res = client.Post(path.c_str(), body, "application/json");
  if (!res) {
    return absl::UnavailableError(absl::StrCat("etcd at ", host_, ":", port_, " did not answer ",
                                               path, " within ", absl::FormatDuration(timeout_),
                                               " (", httplib::to_string(res.error()), ")"));
  }
  if (res->status != 200) {
    return absl::UnavailableError(absl::StrCat("etcd at ", host_, ":", port_, " answered ", path,
                                               " with HTTP ", res->status, ": ",
                                               res->body.substr(0, 200)));
  }
  return res->body;
}

absl::StatusOr<int64_t> Election::GrantLease() const {
  absl::StatusOr<std::string> granted =
      Post("/v3/lease/grant", json{{"TTL", std::to_string(ttl_s_)}}.dump());
  if (!granted.ok()) return granted.status();
  const int64_t lease = Int(json::parse(*granted, nullptr, false), "ID");
  if (lease == 0) return absl::UnavailableError("etcd granted no lease: " + *granted);
  return lease;
}

absl::StatusOr<bool> Election::KeepAlive(int64_t lease) const {
  absl::StatusOr<std::string> renewed =
      Post("/v3/lease/keepalive", json{{"ID", std::to_string(lease)}}.dump());
  if (!renewed.ok()) return renewed.status();
  const json reply = json::parse(*renewed, nullptr, false);
  // An expired lease is answered without a TTL.
  return reply.is_object() && reply.contains("result") && Int(reply["result"], "TTL") > 0;
}

void Election::Revoke(int64_t lease) const {
  (void)Post("/v3/lease/revoke", json{{"ID", std::to_string(lease)}}.dump());
}

absl::StatusOr<int64_t> Election::Campaign(const std::optional<Condition>& require) {
  if (term_.load() != 0 && Renew().ok()) return term_.load();
  term_.store(0);
  TESSERA_ASSIGN_OR_RETURN(const int64_t lease, GrantLease());
  // Write the key under the lease only if nobody holds it; else read who does.
  json compare = json::array({{{"key", key_}, {"target", "CREATE"}, {"create_revision", "0"}}});
  if (require) {
    const std::string key = absl::Base64Escape(require->key);
    compare.push_back(require->value ? json{{"key", key},
                                            {"target", "VALUE"},
                                            {"value", absl::Base64Escape(*require->value)}}
                                     : json{{"key", key},
                                            {"target", "CREATE"},
                                            {"create_revision", "0"}});
  }
  const json txn = {
      {"compare", compare},
      {"success",
       json::array({{{"requestPut",
                      {{"key", key_},
                       {"value", absl::Base64Escape(name_)},
                       {"lease", std::to_string(lease)}}}}})},
      {"failure", json::array({{{"requestRange", {{"key", key_}}}}})},
  };
  absl::StatusOr<std::string> done = Post("/v3/kv/txn", txn.dump());
  if (!done.ok()) {
    Revoke(lease);
    return done.status();
  }
  const json reply = json::parse(*done, nullptr, false);
  if (reply.is_object() && reply.value("succeeded", false)) {
    lease_ = lease;
    // The put's revision is the key's create revision: this term.
    const int64_t term = Int(reply["header"], "revision");
    term_.store(term);
    return term;
  }
  Revoke(lease);
  Holder holder;
  if (reply.is_object() && reply.contains("responses") && !reply["responses"].empty()) {
    const json& range = reply["responses"][0]["response_range"];
    if (range.contains("kvs") && !range["kvs"].empty()) {
      holder.name = Decode(range["kvs"][0], "value");
      holder.term = Int(range["kvs"][0], "create_revision");
    }
  }
  if (holder.term == 0 && require) {
    return absl::FailedPreconditionError(absl::StrCat(
        "nobody is primary, but ", require->key,
        require->value ? absl::StrCat(" does not hold '", *require->value, "'")
                       : std::string(" is not absent")));
  }
  return absl::AlreadyExistsError(absl::StrCat("'", holder.name, "' is primary, term ",
                                               holder.term));
}

absl::Status Election::WhileHeld(const std::string& what, const std::string& op,
                                 const std::string& request) {
  const int64_t term = term_.load();
  if (lease_ == 0 || term == 0) {
    return absl::FailedPreconditionError(absl::StrCat("not primary: cannot ", what));
  }
  const json txn = {
      {"compare", json::array({{{"key", key_},
                                {"target", "CREATE"},
                                {"create_revision", std::to_string(term)}}})},
      {"success", json::array({{{op, json::parse(request)}}})},
  };
  absl::StatusOr<std::string> done = Post("/v3/kv/txn", txn.dump());
  if (!done.ok()) return done.status();
  const json reply = json::parse(*done, nullptr, false);
  if (reply.is_object() && reply.value("succeeded", false)) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("term ", term, " of '", name_, "' is over: cannot ", what));
}

absl::Status Election::DeleteIfVacant(const std::string& key, const std::string& value) {
  const std::string k = absl::Base64Escape(key);
  const json txn = {
      {"compare",
       json::array({{{"key", key_}, {"target", "CREATE"}, {"create_revision", "0"}},
                    {{"key", k}, {"target", "VALUE"}, {"value", absl::Base64Escape(value)}}})},
      {"success", json::array({{{"requestDeleteRange", {{"key", k}}}}})},
  };
  absl::StatusOr<std::string> done = Post("/v3/kv/txn", txn.dump());
  if (!done.ok()) return done.status();
  const json reply = json::parse(*done, nullptr, false);
  if (reply.is_object() && reply.value("succeeded", false)) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("a primary holds the term, or ", key, " does not hold '", value, "'"));
}

absl::Status Election::PutWhileHeld(const std::string& key, const std::string& value) {
  return WhileHeld(absl::StrCat("write ", key), "requestPut",
                   json{{"key", absl::Base64Escape(key)}, {"value", absl::Base64Escape(value)}}
                       .dump());
}

absl::Status Election::DeleteWhileHeld(const std::string& key) {
  return WhileHeld(absl::StrCat("delete ", key), "requestDeleteRange",
                   json{{"key", absl::Base64Escape(key)}}.dump());
}

absl::StatusOr<std::optional<std::string>> Election::Get(const std::string& key) const {
  absl::StatusOr<std::string> read =
      Post("/v3/kv/range", json{{"key", absl::Base64Escape(key)}}.dump());
  if (!read.ok()) return read.status();
  const json reply = json::parse(*read, nullptr, false);
  if (!reply.is_object() || !reply.contains("kvs") || reply["kvs"].empty()) {
    return std::optional<std::string>();
  }
  return std::optional<std::string>(Decode(reply["kvs"][0], "value"));
}

absl::StatusOr<bool> Election::KeepPresent(const std::string& key, const std::string& value) {
  const bool held_before = presence_lease_ != 0;
  if (presence_lease_ != 0) {
    TESSERA_ASSIGN_OR_RETURN(const bool alive, KeepAlive(presence_lease_));
    if (alive) return false;
    presence_lease_ = 0;  // expired: its key is gone too
  }
  TESSERA_ASSIGN_OR_RETURN(const int64_t lease, GrantLease());
  absl::StatusOr<std::string> put =
      Post("/v3/kv/put", json{{"key", absl::Base64Escape(key)},
                              {"value", absl::Base64Escape(value)},
                              {"lease", std::to_string(lease)}}
                             .dump());
  if (!put.ok()) {
    Revoke(lease);
    return put.status();
  }
  presence_lease_ = lease;
  return held_before;
}

absl::Status Election::Renew() {
  if (lease_ == 0) return absl::FailedPreconditionError("not primary: no term to renew");
  TESSERA_ASSIGN_OR_RETURN(const bool alive, KeepAlive(lease_));
  if (!alive) {
    const int64_t ended = term_.exchange(0);
    lease_ = 0;
    return absl::FailedPreconditionError(
        absl::StrCat("term ", ended, " of '", name_, "' is over: its lease expired"));
  }
  return absl::OkStatus();
}

absl::Status Election::Resign() {
  if (lease_ == 0) return absl::OkStatus();
  absl::StatusOr<std::string> revoked =
      Post("/v3/lease/revoke", json{{"ID", std::to_string(lease_)}}.dump());
  lease_ = 0;
  term_.store(0);
  return revoked.status();
}

absl::StatusOr<Election::Holder> Election::Current() const {
  absl::StatusOr<std::string> read = Post("/v3/kv/range", json{{"key", key_}}.dump());
  if (!read.ok()) return read.status();
  const json reply = json::parse(*read, nullptr, false);
  if (!reply.is_object() || !reply.contains("kvs") || reply["kvs"].empty()) {
    return absl::NotFoundError("no primary");
  }
  Holder holder;
  holder.name = Decode(reply["kvs"][0], "value");
  holder.term = Int(reply["kvs"][0], "create_revision");
  holder.lease = Int(reply["kvs"][0], "lease");
  return holder;
}

absl::Status Election::EndTerm(const Holder& holder) {
  if (holder.lease == 0) return absl::InvalidArgumentError("a holder without a lease");
  return Post("/v3/lease/revoke", json{{"ID", std::to_string(holder.lease)}}.dump()).status();
}

}  // namespace tessera
