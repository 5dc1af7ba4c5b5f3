#!/usr/bin/env bash
# Installs what Tessera needs to build, test and run, from Debian's packages.
# Idempotent: installs only what is missing. Uses sudo when not root.
# CUDA is optional and not installed here: with /usr/local/cuda present the
# CUDA backend is built too, without it the CPU backend alone.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap          # Bazel 4.2.3, used offline (see WORKSPACE)
  g++ pkg-config
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev
  libabsl-dev libeigen3-dev libspdlog-dev libfmt-dev libyaml-cpp-dev catch2 zlib1g-dev
  nlohmann-json3-dev       # JSON: the launcher's results and summary
  libcpp-httplib-dev       # the daemons' GET /metrics
  prometheus               # tests: a real Prometheus scrapes a job; promtool checks the text
  iproute2 util-linux      # the emulated cluster (ip, tc; setpriv in its tests)
  iperf3                   # scripts/link_bench.sh: the emulated link's own TCP rate
  python3-matplotlib       # tessera sweep's plots (scripts/sweep_plots.py)
  dataset-fashion-mnist    # /usr/share/datasets/fashion-mnist
  python3
  openssl                  # the TLS tests make their own CA and certificates
  etcd-server              # who is primary of a replicated shard (common/election.h), and its tests
  clang libclang-rt-14-dev # libFuzzer targets and the sanitizer builds (--config=fuzz)
  nodejs npm               # the offline Kubernetes schema check (deploy/k8s/validate)
)
# kubectl renders the Kubernetes manifests; any kubectl will do, Debian's is
# kubernetes-client (installed only when none is on the PATH).
command -v kubectl > /dev/null || PACKAGES+=(kubernetes-client)

missing=()
for p in "${PACKAGES[@]}"; do
  # node and npm may come from elsewhere (nvm, NodeSource): a working one is enough.
  case "$p" in nodejs) command -v node > /dev/null && continue ;; npm) command -v npm > /dev/null && continue ;; esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
else
  echo "install_deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The schema check's JavaScript packages, pinned by package-lock.json.
validate_dir="$(dirname "$0")/../deploy/k8s/validate"
if [ ! -d "$validate_dir/node_modules/kubernetes-models" ]; then
  echo "install_deps: npm ci in deploy/k8s/validate"
  (cd "$validate_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
