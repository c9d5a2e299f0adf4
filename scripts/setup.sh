#!/usr/bin/env bash
# Sets up a fresh Debian machine for sae: the Debian packages the native engine builds against
# (OpenBLAS, pkg-config, a C++ toolchain; oneDNN optionally), when missing, then the npm dependencies (`npm ci`
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

# oneDNN, for bfloat16 training where the CPU has it (docs/engine.md#bfloat16); optional: without
# it the native engine builds and runs in float32 only
if [ ! -f /usr/include/oneapi/dnnl/dnnl.hpp ] && ! pkg-config --exists dnnl 2>/dev/null; then
  echo "setup: installing Debian package libdnnl-dev (optional: bf16 training)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libdnnl-dev; } ||
    echo "setup: libdnnl-dev could not be installed; the native engine is built without bf16"
fi

npm ci --no-audit --no-fund
node bin/sae.js doctor
