#!/usr/bin/env bash
# Sets up a fresh Debian machine for sae: the Debian packages the native engine builds against
# (OpenBLAS, pkg-config, a C++ toolchain), when missing, then the npm dependencies (`npm ci`
# also builds the native addon). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
pkg-config --exists openblas 2>/dev/null || need+=(libopenblas-pthread-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

npm ci --no-audit --no-fund
node bin/sae.js doctor
