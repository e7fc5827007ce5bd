#!/usr/bin/env bash
# Installs the Debian 12 packages moerun needs to build, test and run. Idempotent:
# packages already present are left alone and apt is not touched when nothing is missing.
# Usage: scripts/install-deps.sh [--with-torch]   (python3-torch only for the comparison benchmarks)
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libzmq3-dev cppzmq-dev libsodium-dev
  libyaml-cpp-dev librocksdb-dev libspdlog-dev libfmt-dev
  doctest-dev nlohmann-json3-dev libcpp-httplib-dev libcli11-dev
  libopenblas-dev
  clang libclang-rt-14-dev clang-format
  fortunes
)
if [[ "${1:-}" == "--with-torch" ]]; then packages+=(python3-torch); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
