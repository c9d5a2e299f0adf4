// Tiny sweeps shared by the sweep and Slurm tests: a base config of a few tens of steps, a sweep of
// five runs (two Standard, one TopK, two fine-tunes), and what a finished run computed.
import fs from "node:fs";
import path from "node:path";
import { tmpDir } from "./helpers.ts";

export const TINY_BASE = `name: tiny
seed: 1
data:
  d_in: 16
  synthetic: {n_features: 32, mean_active: 3, magnitude_min: 0.5}
  eval_tokens: 1024
  norm_estimate_tokens: 1024
sae:
  d_sae: 64
train:
  steps: 60
  batch_size: 128
  lr: 0.004
  log_every: 10
  checkpoint_every: 10
  warmup_steps: 5
  sparsity_warmup_steps: 10
  dead_tokens_threshold: 4000
`;

export const TINY_SWEEP = `base: base.yaml
name: tiny
groups:
  - name: standard
    set: {sae.variant: standard}
    grid: {sae.l1_coefficient: [0.05, 0.2]}
  - set: {sae: {variant: topk}}
    grid: {sae.k: [4]}
  - name: standard-ft
    finetune: {from: standard, mode: decoder, steps: 20}
`;

/** a folder with base.yaml and sweep.yaml */
export function sweepFolder(sweep = TINY_SWEEP, base = TINY_BASE): { dir: string; file: string } {
  const dir = tmpDir("sae-sweep-");
  fs.writeFileSync(path.join(dir, "base.yaml"), base);
  const file = path.join(dir, "sweep.yaml");
  fs.writeFileSync(file, sweep);
  return { dir, file };
}

/** Everything a finished run computed, without timings: eval.json, phases.json, the final weights, metrics.csv less tokens_per_s. */
export function runResults(runDir: string): Record<string, string> {
  const metrics = fs.readFileSync(path.join(runDir, "metrics.csv"), "utf8").trim().split("\n").map((l) => l.split(",").slice(0, -1).join(","));
  return {
    eval: fs.readFileSync(path.join(runDir, "eval.json"), "utf8"),
    phases: fs.readFileSync(path.join(runDir, "phases.json"), "utf8"),
    weights: fs.readFileSync(path.join(runDir, "final", "sae_weights.safetensors")).toString("base64"),
    metrics: metrics.join("\n"),
  };
}

