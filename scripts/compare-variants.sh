#!/usr/bin/env bash
# Trains every variant on the same synthetic data (configs/compare.yaml: 256 known features in 64
# dimensions, 512 latents, 1500 steps of 1024 tokens) with its sparsity knob set to land near
# L0 ≈ 8, plus the penalty-free fine-tune of the Standard run, then prints one table.
# About 10 minutes on 2 cores. Usage: scripts/compare-variants.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/compare-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$out"

sae() { node bin/sae.js "$@"; }
train() {
  local id=$1; shift
  if ! sae train configs/compare.yaml --runs-dir "$out" --run-id "$id" "$@" > "$out/$id.log" 2>&1; then
    echo "run $id failed; see $out/$id.log" >&2
    exit 1
  fi
  echo "trained $id" >&2
}

# penalty variants: a sweep of the coefficient around L0 ≈ 8
for l in 0.4 0.5; do train "standard-l$l" --set sae.variant=standard --set sae.l1_coefficient=$l; done
for l in 0.4 0.5; do train "april-l$l" --set sae.variant=standard --set sae.flavour=april --set sae.l1_coefficient=$l; done
for a in 0.1 0.15; do train "tanh-a$a" --set sae.variant=tanh --set sae.l1_coefficient=$a; done
for l in 0.3 0.4; do train "gated-l$l" --set sae.variant=gated --set sae.l1_coefficient=$l; done
for l in 0.012 0.02; do
  train "jumprelu-l$l" --set sae.variant=jumprelu --set sae.l0_coefficient=$l \
    --set sae.jumprelu_init_threshold=0.1 --set sae.jumprelu_bandwidth=0.05
done
# k variants: L0 is set directly
train topk-k8 --set sae.variant=topk --set sae.k=8
train batchtopk-k8 --set sae.variant=batchtopk --set sae.k=8
# the feature-suppression fix on the Standard run: penalty off, encoder frozen (L0 unchanged)
if ! sae finetune standard-l0.5 --runs-dir "$out" --mode decoder --steps 300 --run-id scaled-ft-decoder > "$out/scaled-ft-decoder.log" 2>&1; then
  echo "fine-tune failed; see $out/scaled-ft-decoder.log" >&2
  exit 1
fi

sae runs --runs-dir "$out" --wide
