// Shared test utilities: float64 finite-difference gradient checks, random arrays, an in-process CLI.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { jsEngine } from "../src/engine/js.ts";
import { ParamSet } from "../src/sae/params.ts";
import type { SaeModel, StepInput } from "../src/sae/variant.ts";
import { Rng } from "../src/rng.ts";
import { main } from "../src/cli/main.ts";
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { Config } from "../src/config/schema.ts";
import { selectEngine } from "../src/engine/index.ts";
import { createRunDir } from "../src/io/run.ts";
import { train, type TrainOptions, type TrainResult } from "../src/train/loop.ts";

export function randn(n: number, rng: Rng, scale = 1, ctor: Float32ArrayConstructor | Float64ArrayConstructor = Float64Array): Float32Array | Float64Array {
  const a = new ctor(n);
  for (let i = 0; i < n; i++) a[i] = scale * rng.normal();
  return a;
}

/**
 * Central differences (h = 1e-5, about the cube root of float64's epsilon, which balances
 * truncation and rounding error) of the model's loss against its backward for every
 * element of every parameter. Returns the worst relative error max|a − n| / max(1e-6, |a| + |n|).
 */
export function gradCheck(model: SaeModel, p: ParamSet, inp: Omit<StepInput, "e" | "p">, h = 1e-5, skip: Set<string> = new Set()): { worst: number; where: string; checked: number } {
  const base: StepInput = { ...inp, e: jsEngine, p };
  const g = p.like();
  model.backward(base, model.forward(base).state, g);
  let worst = 0, where = "", checked = 0;
  for (const { name } of p.specs) {
    if (skip.has(name)) continue;
    const w = p.get(name), gw = g.get(name);
    for (let i = 0; i < w.length; i++) {
      const keep = w[i];
      w[i] = keep + h;
      const up = model.forward(base).terms.loss;
      w[i] = keep - h;
      const down = model.forward(base).terms.loss;
      w[i] = keep;
      const num = (up - down) / (2 * h);
      const err = Math.abs(num - gw[i]) / Math.max(1e-6, Math.abs(num) + Math.abs(gw[i]));
      checked++;
      if (err > worst) { worst = err; where = `${name}[${i}]: analytic ${gw[i]}, numeric ${num}`; }
    }
  }
  return { worst, where, checked };
}

export function randomParams(model: SaeModel, seed: number, scale = 0.5): ParamSet {
  const p = new ParamSet(model.specs, Float64Array);
  const rng = new Rng(seed, 7);
  for (let i = 0; i < p.buf.length; i++) p.buf[i] = scale * rng.normal();
  return p;
}

export function tmpDir(prefix = "sae-test-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Runs the CLI in-process; returns its exit code and what it printed. */
export async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "", err = "";
  const code = await main(args, { out: (t) => void (out += t.endsWith("\n") ? t : t + "\n"), err: (t) => void (err += t.endsWith("\n") ? t : t + "\n"), isTTY: false });
  return { code, out, err };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export const MODELS_DIR = process.env.SAE_SHARED_MODELS;

/** bin/sae.js, for tests that need the CLI in a child process (signals, kills, stops) */
export const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "bin", "sae.js");

export interface Exit { code: number | null; signal: string | null; err: string }

/** the CLI in a child process; `done` resolves with its exit code, signal and stderr */
export function spawnCli(args: string[], env: Record<string, string> = {}): { proc: ChildProcess; done: Promise<Exit> } {
  const proc = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  proc.stderr!.on("data", (d) => (err += d));
  const done = new Promise<Exit>((resolve, reject) => {
    proc.on("error", reject);
    proc.on("close", (code, signal) => resolve({ code, signal, err }));
  });
  return { proc, done };
}

/**
 * The smallest run that trains, logs and checkpoints in a second: synthetic data (d_in 16),
 * TopK with 32 latents and k = 3, batch 64, a log row and a checkpoint every 10 steps.
 * `train` adds lines under `train:` (steps, phases, warm-up), each indented two spaces.
 */
export function tinyConfig(name: string, seed: number, train: string): string {
  return `name: ${name}
seed: ${seed}
data:
  d_in: 16
  synthetic: { n_features: 24, mean_active: 2 }
  eval_tokens: 512
  norm_estimate_tokens: 512
sae:
  variant: topk
  d_sae: 32
  k: 3
train:
  batch_size: 64
  lr: 0.01
  log_every: 10
  checkpoint_every: 10
${train}`;
}

/** a fresh folder holding `text` as c.yaml; runs go to its runs/ */
export function configIn(text: string, prefix: string): { dir: string; cfg: string; runs: string } {
  const dir = tmpDir(prefix);
  const cfg = path.join(dir, "c.yaml");
  fs.writeFileSync(cfg, text);
  return { dir, cfg, runs: path.join(dir, "runs") };
}

/** a run of `config` under runs/id stopped once its step reaches `at`, as Ctrl-C leaves it (asserted) */
export async function trainInterrupted(config: Config, runs: string, id: string, at: number, stepper?: TrainOptions["stepper"]): Promise<TrainResult> {
  const control = { stop: false };
  const reporter = { log: () => {}, progress: (step: number) => { if (step >= at) control.stop = true; } };
  const r = await train({ config, runDir: createRunDir(runs, id), runId: id, engine: selectEngine(), reporter, control, stepper });
  assert.equal(r.status.status, "interrupted");
  return r;
}
