#!/usr/bin/env bash
# Installs the Debian 12 packages moerun needs to build, test and run. Idempotent:
# packages already present are left alone and apt is not touched when nothing is missing.
# Usage: scripts/install-deps.sh [--with-torch] [--for-tests]
#   --with-torch  python3-torch (and python3-yaml), for the comparison benchmarks only
#   --for-tests   what the tests drive besides moerun: chromium (dashboard browser test),
#                 prometheus (scrape test), tmux (status --watch in a terminal), python3-torch
#                 (the exported DeepSeek-V3 checkpoint loaded by a PyTorch reference),
#                 slurmctld, slurmd, slurm-client and munge (a Slurm cluster in namespaces)
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libzmq3-dev cppzmq-dev libsodium-dev
  libyaml-cpp-dev librocksdb-dev libspdlog-dev libfmt-dev
  doctest-dev nlohmann-json3-dev libcpp-httplib-dev libcli11-dev
  libopenblas-dev libdnnl-dev libsystemd-dev
  clang libclang-rt-14-dev clang-format
  fortunes
)
for arg in "$@"; do
  case "$arg" in
    --with-torch) packages+=(python3-torch python3-yaml) ;;
    --for-tests) packages+=(chromium prometheus tmux python3-torch slurmctld slurmd slurm-client munge) ;;
    *) echo "install-deps: unknown option $arg (--with-torch, --for-tests)" >&2; exit 2 ;;
  esac
done
# npm fetches the dashboard's charting library at build time. A Node.js that already brings
# its own npm (e.g. NodeSource's) is used as it is: Debian's npm would conflict with it.
if ! command -v npm >/dev/null 2>&1; then packages+=(npm); fi

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
