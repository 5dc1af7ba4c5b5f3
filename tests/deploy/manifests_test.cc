// Deployment: every kustomize overlay renders, validates against the
// Kubernetes OpenAPI schema offline, and has the properties Tessera relies on
// (gRPC probes, restricted pod security, selectors matching labels, ports and
// counts matching the job file). The images' Dockerfiles are checked for
// what the issue asks of them (no Docker engine runs here to build them).
#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

#include "common/config.h"
#include "tests/deploy/rendered.h"
#include "yaml-cpp/yaml.h"

namespace tessera {
namespace {

// Every label of `selector` is on `labels`.
bool Selects(const YAML::Node& selector, const YAML::Node& labels) {
  if (!selector || selector.size() == 0) return false;
  for (const auto& kv : selector) {
    const YAML::Node v = labels[kv.first.as<std::string>()];
    if (!v || v.as<std::string>() != kv.second.as<std::string>()) return false;
  }
  return true;
}

void CheckRestricted(const YAML::Node& pod_spec) {
  CHECK(pod_spec["securityContext"]["runAsNonRoot"].as<bool>());
  CHECK(pod_spec["securityContext"]["runAsUser"].as<int>() != 0);
  CHECK(pod_spec["securityContext"]["seccompProfile"]["type"].as<std::string>() ==
        "RuntimeDefault");
  for (const auto& c : pod_spec["containers"]) {
    const YAML::Node sc = c["securityContext"];
    CHECK_FALSE(sc["allowPrivilegeEscalation"].as<bool>());
    CHECK(sc["readOnlyRootFilesystem"].as<bool>());
    REQUIRE(sc["capabilities"]["drop"].size() == 1);
    CHECK(sc["capabilities"]["drop"][0].as<std::string>() == "ALL");
  }
}

int PortOf(const std::string& address) { return std::stoi(address.substr(address.rfind(':') + 1)); }

TEST_CASE("every overlay validates against the Kubernetes OpenAPI schema") {
  for (const char* overlay : {"cpu", "gpu", "secure", "replicas"}) {
    INFO("overlay " << overlay);
    Rendered r = Render(overlay);
    std::string path = TempPath(std::string("rendered-") + overlay + ".yaml");
    std::ofstream(path) << r.text;
    int status;
    std::string report =
        Shell("node " + Runfile("deploy/k8s/validate/validate.js") + " " + path + " 2>&1", &status);
    INFO(report << "\n(if a module is missing: scripts/install_deps.sh runs npm ci)");
    CHECK(status == 0);
    for (const char* kind :
         {"Namespace", "ConfigMap", "Service", "StatefulSet", "Job", "NetworkPolicy"}) {
      CHECK(report.find(std::string("ok ") + kind + "/") != std::string::npos);
    }
  }
}

TEST_CASE("the validator rejects an object that breaks the schema") {
  Rendered r = Render("cpu");
  std::string broken = r.text;
  broken.replace(broken.find("replicas: 2"), 11, "replicas: two");
  std::string path = TempPath("broken.yaml");
  std::ofstream(path) << broken;
  int status;
  std::string report =
      Shell("node " + Runfile("deploy/k8s/validate/validate.js") + " " + path + " 2>&1", &status);
  CHECK(status == 1);
  CHECK(report.find("invalid StatefulSet/tessera-server") != std::string::npos);
}

TEST_CASE("servers: headless service, StatefulSet, gRPC probes, ports and counts match the job") {
  for (const char* overlay : {"cpu", "gpu"}) {
    INFO("overlay " << overlay);
    Rendered r = Render(overlay);
    JobConfig job = JobOf(r);
    const int port = PortOf(job.cluster.servers[0]);
    const YAML::Node svc = r.by_kind.at("Service"), sts = r.by_kind.at("StatefulSet");
    const YAML::Node pod = sts["spec"]["template"];
    CHECK(svc["spec"]["clusterIP"].as<std::string>() == "None");
    CHECK(sts["spec"]["serviceName"].as<std::string>() ==
          svc["metadata"]["name"].as<std::string>());
    CHECK(Selects(svc["spec"]["selector"], pod["metadata"]["labels"]));
    CHECK(Selects(sts["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]));
    CHECK(sts["spec"]["replicas"].as<uint32_t>() == job.num_servers());
    CHECK(svc["spec"]["ports"][0]["port"].as<int>() == port);
    // The pattern's host is this StatefulSet's pod DNS name under this Service.
    CHECK(job.cluster.server_pattern.find(sts["metadata"]["name"].as<std::string>() + "-{i}." +
                                          svc["metadata"]["name"].as<std::string>() + ".") == 0);
    const YAML::Node c = pod["spec"]["containers"][0];
    CHECK(c["ports"][0]["containerPort"].as<int>() == port);
    CHECK(c["readinessProbe"]["grpc"]["port"].as<int>() == port);
    CHECK(c["livenessProbe"]["grpc"]["port"].as<int>() == port);
    CHECK(c["resources"]["requests"]["cpu"]);
    CHECK(c["resources"]["requests"]["memory"]);
    bool pod_name = false;
    for (const auto& e : c["env"]) {
      pod_name |= e["name"].as<std::string>() == "POD_NAME" &&
                  e["valueFrom"]["fieldRef"]["fieldPath"].as<std::string>() == "metadata.name";
    }
    CHECK(pod_name);  // the shard index comes from it
    CHECK(sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].as<std::string>() ==
          "checkpoints");
    // The shards checkpoint onto that claim: checkpoint.dir is where it is mounted.
    bool on_claim = false;
    for (const auto& m : c["volumeMounts"]) {
      on_claim |= m["name"].as<std::string>() == "checkpoints" &&
                  m["mountPath"].as<std::string>() == job.checkpoint.dir;
    }
    CHECK(on_claim);
    CHECK(job.checkpoint.restore == RestorePolicy::kAuto);
    CHECK((job.checkpoint.every_seconds > 0 || job.checkpoint.every_clocks > 0));
    CheckRestricted(pod["spec"]);
  }
}

// Whether a pod labelled `incoming` may not share a node (topology domain)
// with an existing pod labelled `existing` under anti-affinity term `term`:
// the term's labelSelector selects the existing pod and, for every key in
// matchLabelKeys the incoming pod has, the existing pod has the same value.
bool Repels(const YAML::Node& term, const YAML::Node& incoming, const YAML::Node& existing) {
  if (!Selects(term["labelSelector"]["matchLabels"], existing)) return false;
  for (const auto& key : term["matchLabelKeys"]) {
    const std::string k = key.as<std::string>();
    if (!incoming[k]) continue;
    if (!existing[k] || existing[k].as<std::string>() != incoming[k].as<std::string>()) return false;
  }
  return true;
}

// A StatefulSet's pod `i` as the controller labels it: the template's labels
// and its ordinal (apps.kubernetes.io/pod-index, Kubernetes >= 1.28).
YAML::Node PodLabels(const YAML::Node& sts, int i) {
  YAML::Node labels = YAML::Clone(sts["spec"]["template"]["metadata"]["labels"]);
  labels["apps.kubernetes.io/pod-index"] = std::to_string(i);
  return labels;
}

// The job file without comments and blank lines, minus lines holding `drop`.
std::string JobLines(const std::string& text, const std::vector<std::string>& drop) {
  std::istringstream in(text);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line = line.substr(0, hash);
    while (!line.empty() && line.back() == ' ') line.pop_back();
    if (line.empty()) continue;
    bool dropped = false;
    for (const std::string& d : drop) dropped |= line.find(d) != std::string::npos;
    if (!dropped) out += line + "\n";
  }
  return out;
}

TEST_CASE("replicas overlay: a standby per shard, never on its primary's node, and a 3-member etcd") {
  Rendered r = Render("replicas");
  JobConfig job = JobOf(r);
  const YAML::Node server = r.by_name.at("StatefulSet/tessera-server");
  const YAML::Node standby = r.by_name.at("StatefulSet/tessera-standby");
  const YAML::Node standby_svc = r.by_name.at("Service/tessera-standby");
  const uint32_t shards = job.num_servers();
  CHECK(server["spec"]["replicas"].as<uint32_t>() == shards);
  CHECK(standby["spec"]["replicas"].as<uint32_t>() == shards);
  // The job's standbys are this StatefulSet's pods under this Service.
  REQUIRE(job.cluster.standbys.size() == shards);
  for (uint32_t i = 0; i < shards; ++i) {
    CHECK(job.cluster.standbys[i].find("tessera-standby-" + std::to_string(i) +
                                       ".tessera-standby.") == 0);
  }
  CHECK(standby["spec"]["serviceName"].as<std::string>() == "tessera-standby");
  CHECK(standby_svc["spec"]["clusterIP"].as<std::string>() == "None");
  CHECK(Selects(standby_svc["spec"]["selector"], standby["spec"]["template"]["metadata"]["labels"]));
  CHECK(!Selects(standby_svc["spec"]["selector"], server["spec"]["template"]["metadata"]["labels"]));
  CHECK(standby_svc["spec"]["ports"][0]["port"].as<int>() == PortOf(job.cluster.standbys[0]));
  const YAML::Node c = standby["spec"]["template"]["spec"]["containers"][0];
  std::vector<std::string> args;
  for (const auto& a : c["args"]) args.push_back(a.as<std::string>());
  CHECK(std::find(args.begin(), args.end(), "--standby") != args.end());
  CHECK(c["readinessProbe"]["grpc"]["port"].as<int>() == PortOf(job.cluster.standbys[0]));
  CheckRestricted(standby["spec"]["template"]["spec"]);

  // Placement: as the scheduler evaluates each pod's required anti-affinity
  // against the pods already placed, shard i's primary and standby repel
  // each other (either may be placed second, or again after a failover), and
  // nothing else does, so the job needs only 2 nodes.
  const YAML::Node server_terms = server["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
                                        ["requiredDuringSchedulingIgnoredDuringExecution"];
  const YAML::Node standby_terms = standby["spec"]["template"]["spec"]["affinity"]
                                          ["podAntiAffinity"]
                                          ["requiredDuringSchedulingIgnoredDuringExecution"];
  REQUIRE(server_terms.size() == 1);
  REQUIRE(standby_terms.size() == 1);
  for (const YAML::Node& term : {server_terms[0], standby_terms[0]}) {
    CHECK(term["topologyKey"].as<std::string>() == "kubernetes.io/hostname");
  }
  for (uint32_t i = 0; i < shards; ++i) {
    for (uint32_t j = 0; j < shards; ++j) {
      INFO("shard " << i << " against shard " << j);
      const YAML::Node server_i = PodLabels(server, i), standby_i = PodLabels(standby, i);
      const YAML::Node server_j = PodLabels(server, j), standby_j = PodLabels(standby, j);
      CHECK(Repels(standby_terms[0], standby_i, server_j) == (i == j));
      CHECK(Repels(server_terms[0], server_i, standby_j) == (i == j));
      if (i != j) {
        CHECK(!Repels(server_terms[0], server_i, server_j));
        CHECK(!Repels(standby_terms[0], standby_i, standby_j));
      }
    }
  }

  // etcd: three members on three nodes, its clients Service where the job says.
  const YAML::Node etcd = r.by_name.at("StatefulSet/tessera-etcd");
  const YAML::Node client = r.by_name.at("Service/tessera-etcd-client");
  CHECK(etcd["spec"]["replicas"].as<int>() == 3);
  CHECK(job.cluster.etcd == client["metadata"]["name"].as<std::string>() + ":" +
                                std::to_string(client["spec"]["ports"][0]["port"].as<int>()));
  CHECK(Selects(client["spec"]["selector"], etcd["spec"]["template"]["metadata"]["labels"]));
  const YAML::Node etcd_term = etcd["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
                                   ["requiredDuringSchedulingIgnoredDuringExecution"][0];
  CHECK(Repels(etcd_term, PodLabels(etcd, 0), PodLabels(etcd, 1)));
  CHECK(etcd["spec"]["template"]["spec"]["containers"][0]["command"][0].as<std::string>() ==
        "etcd");
  std::string initial_cluster;
  for (const auto& a : etcd["spec"]["template"]["spec"]["containers"][0]["args"]) {
    if (a.as<std::string>().rfind("--initial-cluster=", 0) == 0) initial_cluster = a.as<std::string>();
  }
  for (int m = 0; m < 3; ++m) {
    CHECK(initial_cluster.find("tessera-etcd-" + std::to_string(m) + "=http://tessera-etcd-" +
                               std::to_string(m) + ".tessera-etcd.") != std::string::npos);
  }
  CheckRestricted(etcd["spec"]["template"]["spec"]);

  // The job is the base's, plus the standbys and etcd.
  CHECK(JobLines(JobTextOf(r), {"standby_pattern:", "etcd:"}) ==
        JobLines(JobTextOf(Render("cpu")), {}));
}

TEST_CASE("workers: Indexed Job sized like the job, failing fast on config errors") {
  for (const char* overlay : {"cpu", "gpu"}) {
    INFO("overlay " << overlay);
    Rendered r = Render(overlay);
    JobConfig job = JobOf(r);
    const YAML::Node spec = r.by_kind.at("Job")["spec"];
    CHECK(spec["completionMode"].as<std::string>() == "Indexed");
    CHECK(spec["completions"].as<uint32_t>() == job.cluster.workers);
    CHECK(spec["parallelism"].as<uint32_t>() == job.cluster.workers);
    CHECK(spec["template"]["spec"]["restartPolicy"].as<std::string>() == "Never");
    const YAML::Node rules = spec["podFailurePolicy"]["rules"];
    CHECK(rules[0]["action"].as<std::string>() == "FailJob");
    CHECK(rules[0]["onExitCodes"]["values"][0].as<int>() == 2);
    // A lost server (exit 3) and a drained or preempted pod are retried
    // without counting against backoffLimit.
    CHECK(rules[1]["action"].as<std::string>() == "Ignore");
    CHECK(rules[1]["onExitCodes"]["values"][0].as<int>() == 3);
    CHECK(rules[2]["action"].as<std::string>() == "Ignore");
    CHECK(rules[2]["onPodConditions"][0]["type"].as<std::string>() == "DisruptionTarget");
    const YAML::Node c = spec["template"]["spec"]["containers"][0];
    // The result outlives the pod's filesystem: it is the termination message.
    bool result_arg = false;
    for (const YAML::Node& arg : c["args"]) result_arg |= arg.as<std::string>() == "/tmp/result.json";
    CHECK(result_arg);
    CHECK(c["terminationMessagePath"].as<std::string>() == "/tmp/result.json");
    const bool gpu = std::string(overlay) == "gpu";
    CHECK(bool(c["resources"]["limits"]["nvidia.com/gpu"]) == gpu);
    // A GPU pod that finds no usable GPU exits 2 (and fails the job) rather
    // than train on the CPU unnoticed.
    bool wants_cuda = false;
    for (const YAML::Node& arg : c["args"])
      wants_cuda |= arg.as<std::string>() == "worker.device=cuda";
    CHECK(wants_cuda == gpu);
    CheckRestricted(spec["template"]["spec"]);
  }
}

// The values of a container's "--set" args.
std::vector<std::string> SetsOf(const YAML::Node& container) {
  std::vector<std::string> sets;
  const YAML::Node args = container["args"];
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i].as<std::string>() == "--set") sets.push_back(args[i + 1].as<std::string>());
  }
  return sets;
}

bool Has(const std::vector<std::string>& sets, const std::string& set) {
  return std::find(sets.begin(), sets.end(), set) != sets.end();
}

// Whether `container` mounts the Secret `secret` of `pod_spec` at the folder of `file`.
bool MountsSecretFor(const YAML::Node& pod_spec, const YAML::Node& container,
                     const std::string& secret, const std::string& file) {
  for (const auto& v : pod_spec["volumes"]) {
    if (!v["secret"] || v["secret"]["secretName"].as<std::string>() != secret) continue;
    for (const auto& m : container["volumeMounts"]) {
      if (m["name"].as<std::string>() == v["name"].as<std::string>() &&
          file.rfind(m["mountPath"].as<std::string>() + "/", 0) == 0) {
        return true;
      }
    }
  }
  return false;
}

TEST_CASE("secure overlay: TLS and the token on both sides, probes on a plaintext health port") {
  Rendered r = Render("secure");
  const YAML::Node server_pod = r.by_kind.at("StatefulSet")["spec"]["template"]["spec"];
  const YAML::Node worker_pod = r.by_kind.at("Job")["spec"]["template"]["spec"];
  const YAML::Node server = server_pod["containers"][0], worker = worker_pod["containers"][0];
  const std::vector<std::string> server_sets = SetsOf(server), worker_sets = SetsOf(worker);
  // Every --set is a key the daemons accept (the files are read at start-up).
  auto server_job = ParseJobConfig(r.by_kind.at("ConfigMap")["data"]["job.yaml"].as<std::string>(),
                                   server_sets);
  auto worker_job = ParseJobConfig(r.by_kind.at("ConfigMap")["data"]["job.yaml"].as<std::string>(),
                                   worker_sets);
  REQUIRE(server_job.ok());
  REQUIRE(worker_job.ok());
  CHECK(server_job->security.tls.cert_file != "");
  CHECK(server_job->security.token_file == worker_job->security.token_file);
  CHECK(worker_job->security.tls.ca_file != "");
  CHECK(worker_job->security.tls.key_file == "");  // a worker never holds the server's key
  CHECK(MountsSecretFor(server_pod, server, "tessera-server-tls", server_job->security.tls.key_file));
  // The job's own token: a Secret generated from the overlay's token file,
  // named after its content, mounted by both sides.
  REQUIRE(r.by_kind.count("Secret") == 1);
  const YAML::Node token = r.by_kind.at("Secret");
  const std::string token_secret = token["metadata"]["name"].as<std::string>();
  CHECK(token_secret.rfind("tessera-token-", 0) == 0);
  CHECK(token["data"]["token"].as<std::string>().size() >= 64);  // 32 random bytes in hex, base64
  CHECK(MountsSecretFor(server_pod, server, token_secret, server_job->security.token_file));
  CHECK(MountsSecretFor(worker_pod, worker, "tessera-server-tls", worker_job->security.tls.ca_file));
  CHECK(MountsSecretFor(worker_pod, worker, token_secret, worker_job->security.token_file));
  for (const auto& v : worker_pod["volumes"]) {  // only ca.crt of the server's Secret
    if (v["secret"] && v["secret"]["secretName"].as<std::string>() == "tessera-server-tls") {
      REQUIRE(v["secret"]["items"].size() == 1);
      CHECK(v["secret"]["items"][0]["key"].as<std::string>() == "ca.crt");
    }
  }
  const int health = static_cast<int>(server_job->server.health_port);
  CHECK(health > 0);
  CHECK(server["readinessProbe"]["grpc"]["port"].as<int>() == health);
  CHECK(server["livenessProbe"]["grpc"]["port"].as<int>() == health);
  CHECK(Has(worker_sets, "logging.metrics_file=/tmp/metrics.jsonl"));
  CheckRestricted(server_pod);
  CheckRestricted(worker_pod);
}

TEST_CASE("the network policy admits the server port only from worker pods") {
  Rendered r = Render("cpu");
  const YAML::Node np = r.by_kind.at("NetworkPolicy")["spec"];
  const YAML::Node server_labels =
      r.by_kind.at("StatefulSet")["spec"]["template"]["metadata"]["labels"];
  const YAML::Node worker_labels = r.by_kind.at("Job")["spec"]["template"]["metadata"]["labels"];
  CHECK(Selects(np["podSelector"]["matchLabels"], server_labels));
  CHECK_FALSE(Selects(np["podSelector"]["matchLabels"], worker_labels));
  REQUIRE(np["ingress"].size() == 2);
  CHECK(Selects(np["ingress"][0]["from"][0]["podSelector"]["matchLabels"], worker_labels));
  CHECK_FALSE(Selects(np["ingress"][0]["from"][0]["podSelector"]["matchLabels"], server_labels));
  CHECK(np["ingress"][0]["ports"][0]["port"].as<int>() == PortOf(JobOf(r).cluster.servers[0]));
  // The second rule opens the metrics port alone, to scrapers anywhere.
  REQUIRE(np["ingress"][1]["ports"].size() == 1);
  CHECK(np["ingress"][1]["ports"][0]["port"].as<int>() ==
        static_cast<int>(JobOf(r).server.metrics_port));
  CHECK_FALSE(np["ingress"][1]["from"][0]["podSelector"]);
  CHECK(r.by_kind.at("Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
            .as<std::string>() == "restricted");
}

TEST_CASE("every pod is annotated for scraping at the metrics port its job file sets") {
  Rendered r = Render("cpu");
  const JobConfig job = JobOf(r);
  REQUIRE(job.server.metrics_port > 0);
  REQUIRE(job.worker.metrics_port > 0);
  CHECK(job.worker.metrics_linger_s >= 15);  // outlives the PodMonitor's scrape interval
  const std::vector<std::pair<std::string, uint32_t>> pods = {
      {"StatefulSet", job.server.metrics_port}, {"Job", job.worker.metrics_port}};
  for (const auto& [kind, port] : pods) {
    INFO(kind);
    const YAML::Node tmpl = r.by_kind.at(kind)["spec"]["template"];
    const YAML::Node annotations = tmpl["metadata"]["annotations"];
    CHECK(annotations["prometheus.io/scrape"].as<std::string>() == "true");
    CHECK(annotations["prometheus.io/port"].as<std::string>() == std::to_string(port));
    CHECK(annotations["prometheus.io/path"].as<std::string>() == "/metrics");
    bool named = false;
    for (const auto& p : tmpl["spec"]["containers"][0]["ports"]) {
      named |= p["name"].as<std::string>() == "metrics" && p["containerPort"].as<uint32_t>() == port;
    }
    CHECK(named);
  }
}

TEST_CASE("the monitoring overlay adds a PodMonitor of every server and worker pod") {
  Rendered r = Render("monitoring");
  // The objects the base has validate as in every overlay; the PodMonitor is
  // a CRD the offline schema does not know, checked here by hand.
  std::string core;
  std::istringstream in(r.text);
  std::string doc;
  auto flush = [&] {
    if (doc.find("\nkind: PodMonitor\n") == std::string::npos) core += "---\n" + doc;
    doc.clear();
  };
  for (std::string line; std::getline(in, line);) {
    if (line == "---") {
      flush();
    } else {
      doc += line + "\n";
    }
  }
  flush();
  CHECK(core.find("PodMonitor") == std::string::npos);
  const std::string path = TempPath("rendered-monitoring.yaml");
  std::ofstream(path) << core;
  int status;
  std::string report =
      Shell("node " + Runfile("deploy/k8s/validate/validate.js") + " " + path + " 2>&1", &status);
  INFO(report);
  CHECK(status == 0);
  CHECK(report.find("ok StatefulSet/") != std::string::npos);
  REQUIRE(r.by_kind.count("PodMonitor") == 1);
  const YAML::Node pm = r.by_kind.at("PodMonitor");
  CHECK(pm["apiVersion"].as<std::string>() == "monitoring.coreos.com/v1");
  CHECK(pm["metadata"]["namespace"].as<std::string>() ==
        r.by_kind.at("StatefulSet")["metadata"]["namespace"].as<std::string>());
  const YAML::Node selector = pm["spec"]["selector"]["matchLabels"];
  CHECK(Selects(selector, r.by_kind.at("StatefulSet")["spec"]["template"]["metadata"]["labels"]));
  CHECK(Selects(selector, r.by_kind.at("Job")["spec"]["template"]["metadata"]["labels"]));
  REQUIRE(pm["spec"]["podMetricsEndpoints"].size() == 1);
  const YAML::Node endpoint = pm["spec"]["podMetricsEndpoints"][0];
  CHECK(endpoint["port"].as<std::string>() == "metrics");
  CHECK(endpoint["path"].as<std::string>() == "/metrics");
  CHECK(endpoint["honorLabels"].as<bool>());  // `job` stays the Tessera job's name
}

TEST_CASE("the Dockerfiles are multi-stage, built by the install script, run as non-root") {
  for (const char* file : {"Dockerfile", "Dockerfile.gpu"}) {
    INFO(file);
    std::ifstream in(Runfile(std::string("deploy/docker/") + file));
    std::stringstream s;
    s << in.rdbuf();
    const std::string text = s.str();
    size_t froms = 0;
    for (size_t at = text.find("\nFROM "); at != std::string::npos;
         at = text.find("\nFROM ", at + 1)) {
      ++froms;
    }
    CHECK(froms == 2);
    CHECK(text.find("AS builder") != std::string::npos);
    CHECK(text.find("scripts/install_deps.sh") != std::string::npos);
    CHECK(text.find("bazel build") != std::string::npos);
    CHECK(text.find("COPY --from=builder") != std::string::npos);
    CHECK(text.find("USER 10001:10001") != std::string::npos);
    CHECK(text.find("USER root") == std::string::npos);
  }
}

}  // namespace
}  // namespace tessera
