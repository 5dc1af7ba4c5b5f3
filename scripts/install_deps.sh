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
  libabsl-dev libeigen3-dev libspdlog-dev libfmt-dev libyaml-cpp-dev catch2
  dataset-fashion-mnist    # /usr/share/datasets/fashion-mnist
  python3                  # the launcher's summary and the plots
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
