// Phases and fine-tuning (the feature-suppression study, docs/training.md#feature-suppression-modes): closed-form scale,
// frozen groups unchanged bit for bit, a frozen encoder keeps every token's active set, the
// encoder control raises L0, multi-phase runs log and evaluate per phase.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { cli, tmpDir } from "./helpers.ts";
import { loadConfig } from "../src/config/load.ts";
import { createModel } from "../src/sae/index.ts";
import { latestCheckpoint, loadInitFrom, readCheckpoint } from "../src/train/checkpoint.ts";
import { createSource, scaleInPlace } from "../src/data/index.ts";
import { jsEngine } from "../src/engine/js.ts";
import type { ParamSet } from "../src/sae/params.ts";
import type { SaeModel } from "../src/sae/variant.ts";

const BASE = `name: ft
seed: 5
data:
  d_in: 32
  synthetic: { n_features: 48, mean_active: 3, decay: 0.99, magnitude_min: 0.5 }
  eval_tokens: 4096
  norm_estimate_tokens: 4096
sae:
  variant: standard
  d_sae: 96
  l1_coefficient: 0.3
train:
  steps: 600
  batch_size: 256
  lr: 0.005
  warmup_steps: 20
  sparsity_warmup_steps: 100
  dead_tokens_threshold: 20000
  log_every: 100
`;

const dir = tmpDir();
const runs = path.join(dir, "runs");
const cfgFile = path.join(dir, "base.yaml");
fs.writeFileSync(cfgFile, BASE);

async function ensureParent(): Promise<string> {
  const p = path.join(runs, "parent");
  if (!fs.existsSync(p)) {
    const r = await cli(["train", cfgFile, "--runs-dir", runs, "--run-id", "parent"]);
    assert.equal(r.code, 0, r.err);
  }
  return p;
}

const evalOf = (run: string) => JSON.parse(fs.readFileSync(path.join(runs, run, "eval.json"), "utf8"));

function lastState(run: string): { model: SaeModel; p: ParamSet; fixed: Float32Array | null; config: ReturnType<typeof loadConfig>["config"] } {
  const config = loadConfig(path.join(runs, run, "config.yaml")).config;
  const ck = readCheckpoint(latestCheckpoint(path.join(runs, run))!, createModel(config));
  return { model: createModel(config, ck.fixedInputBias), p: ck.p, fixed: ck.fixedInputBias, config };
}

/** active-latent masks [N, H] of a model on N tokens of held-out data, in training units */
function activeSets(st: ReturnType<typeof lastState>, N: number): Uint8Array {
  const src = createSource(st.config);
  const X = src.evalSet(N);
  scaleInPlace(X, JSON.parse(fs.readFileSync(latestCheckpoint(path.join(runs, "parent"))!, "utf8")).scale);
  const r = st.model.forward({ e: jsEngine, p: st.p, X, B: N, coeff: 0, dead: null });
  const H = st.model.dims.H;
  const out = new Uint8Array(N * H);
  if (r.code.kind === "dense") for (let j = 0; j < N * H; j++) out[j] = r.code.F[j] > 0 ? 1 : 0;
  return out;
}

test("fine-tune --mode decoder: encoder bit-for-bit frozen, identical active sets, lower MSE, gamma toward 1", async () => {
  await ensureParent();
  const r = await cli(["finetune", "parent", "--runs-dir", runs, "--mode", "decoder", "--steps", "300", "--run-id", "dec"]);
  assert.equal(r.code, 0, r.err);
  const parent = lastState("parent"), child = lastState("dec");
  assert.equal(child.model.variant, "scaled", "a standard parent becomes scaled");
  assert.deepEqual(child.p.get("W_enc"), parent.p.get("W_enc"));
  assert.deepEqual(child.p.get("b_enc"), parent.p.get("b_enc"));
  assert.deepEqual(child.fixed, Float32Array.from(parent.p.get("b_dec")), "the encoder keeps subtracting the parent's b_dec");
  assert.notDeepEqual(child.p.get("b_dec"), parent.p.get("b_dec"), "b_dec itself trains");
  assert.deepEqual(activeSets(child, 2048), activeSets(parent, 2048));
  const pe = evalOf("parent"), ce = evalOf("dec");
  assert.ok(Math.abs(ce.l0 - pe.l0) < 0.01, `L0 ${pe.l0} → ${ce.l0}`);
  assert.ok(ce.mse < 0.95 * pe.mse, `MSE ${pe.mse} → ${ce.mse}`);
  assert.ok(pe.gamma < 0.95 && ce.gamma > pe.gamma + 0.03 && Math.abs(1 - ce.gamma) < Math.abs(1 - pe.gamma), `gamma ${pe.gamma} → ${ce.gamma}`);
  const cfg = fs.readFileSync(path.join(runs, "dec", "config.yaml"), "utf8");
  assert.match(cfg, /init_from: .*parent/);
  assert.match(cfg, /sparsity_coefficient: 0\b/);
});

test("fine-tune --mode scale: s converges to the closed-form least-squares solution within 1%; everything else frozen", async () => {
  // A narrower parent (H = 32 < G = 48 true features) has no near-duplicate latents, whose
  // scales would trade off along a flat direction of the least-squares problem.
  const narrow = path.join(dir, "narrow.yaml");
  fs.writeFileSync(narrow, BASE.replace("d_sae: 96", "d_sae: 32"));
  assert.equal((await cli(["train", narrow, "--runs-dir", runs, "--run-id", "narrow"])).code, 0);
  const r = await cli(["finetune", "narrow", "--runs-dir", runs, "--mode", "scale", "--steps", "800", "--lr", "0.01", "--set", "train.batch_size=2048", "--set", "train.decay_fraction=0.5", "--run-id", "scale"]);
  assert.equal(r.code, 0, r.err);
  const child = lastState("scale");
  const start = loadInitFrom(path.join(runs, "narrow"), child.config, child.model).p;
  for (const name of ["W_enc", "b_enc", "W_dec", "b_dec"]) assert.deepEqual(child.p.get(name), start.get(name), `${name} moved`);

  // Normal equations ((FᵀF) ⊙ (W Wᵀ)) s = r, r_i = Σ_b F_bi [(X − b_dec) Wᵀ]_bi on a large sample
  const { D, H } = child.model.dims;
  const N = 65536;
  const X = createSource(child.config).trainBatch(10_000, N);
  scaleInPlace(X, JSON.parse(fs.readFileSync(latestCheckpoint(path.join(runs, "scale"))!, "utf8")).scale);
  const s1 = start; // s = 1 → F are the unscaled codes
  s1.get("s").fill(1);
  const fw = child.model.forward({ e: jsEngine, p: s1, X, B: N, coeff: 0, dead: null });
  const F = fw.code.kind === "dense" ? fw.code.F : new Float32Array();
  const W = start.get("W_dec"), bDec = start.get("b_dec");
  const WW = new Float64Array(H * H);
  for (let i = 0; i < H; i++) for (let j = 0; j < H; j++) { let d = 0; for (let k = 0; k < D; k++) d += W[i * D + k] * W[j * D + k]; WW[i * H + j] = d; }
  const A = new Float64Array(H * H), rhs = new Float64Array(H), count = new Float64Array(H);
  const proj = new Float64Array(H);
  for (let b = 0; b < N; b++) {
    const act: number[] = [];
    for (let i = 0; i < H; i++) if (F[b * H + i] > 0) act.push(i);
    for (const i of act) {
      let d = 0;
      for (let k = 0; k < D; k++) d += (X[b * D + k] - bDec[k]) * W[i * D + k];
      proj[i] = d;
      rhs[i] += F[b * H + i] * d;
      count[i]++;
      for (const j of act) A[i * H + j] += F[b * H + i] * F[b * H + j] * WW[i * H + j];
    }
  }
  for (let i = 0; i < H; i++) A[i * H + i] += 1e-9; // ridge for latents that never fire
  const sStar = solve(A, rhs, H);
  const learned = child.p.get("s");
  let worst = 0, checked = 0;
  for (let i = 0; i < H; i++) {
    if (count[i] / N < 0.01) continue; // too rare for either estimate to be precise
    checked++;
    worst = Math.max(worst, Math.abs(learned[i] - sStar[i]) / sStar[i]);
  }
  assert.ok(checked > H / 4, `only ${checked} latents fire on ≥1% of tokens`);
  assert.ok(worst < 0.01, `worst relative difference between learned and closed-form s: ${worst}`);
  console.log(`# scale mode: ${checked} latents, worst |s − s*|/s* = ${worst.toExponential(2)}`);
  assert.ok(Array.from(learned).reduce((a, v) => a + v, 0) / H > 1, "mean s > 1: the fine-tune undoes shrinkage");
});

test("fine-tune --mode encoder (decoder frozen, the negative control) raises L0", async () => {
  await ensureParent();
  const r = await cli(["finetune", "parent", "--runs-dir", runs, "--mode", "encoder", "--steps", "300", "--run-id", "enc"]);
  assert.equal(r.code, 0, r.err);
  const parent = lastState("parent"), child = lastState("enc");
  assert.deepEqual(child.p.get("W_dec"), parent.p.get("W_dec"));
  assert.deepEqual(child.p.get("b_dec"), parent.p.get("b_dec"));
  assert.ok(evalOf("enc").l0 > 2 * evalOf("parent").l0, `L0 ${evalOf("parent").l0} → ${evalOf("enc").l0}`);
});

test("fine-tune --freeze with groups, and its errors", async () => {
  await ensureParent();
  const r = await cli(["finetune", "parent", "--runs-dir", runs, "--freeze", "encoder,b_dec", "--steps", "50", "--run-id", "frz"]);
  assert.equal(r.code, 0, r.err);
  const parent = lastState("parent"), child = lastState("frz");
  for (const n of ["W_enc", "b_enc", "b_dec"]) assert.deepEqual(child.p.get(n), parent.p.get(n), `${n} moved`);
  assert.notDeepEqual(child.p.get("W_dec"), parent.p.get("W_dec"));
  const bad = await cli(["finetune", "parent", "--runs-dir", runs, "--freeze", "encodr"]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /a standard SAE has no group or parameter "encodr"[\s\S]*freeze any of: encoder, decoder/);
  const both = await cli(["finetune", "parent", "--runs-dir", runs, "--freeze", "encoder", "--mode", "scale"]);
  assert.equal(both.code, 2);
  const mode = await cli(["finetune", "parent", "--runs-dir", runs, "--mode", "sclae"]);
  assert.equal(mode.code, 2);
  assert.match(mode.err, /Allowed choices are encoder, scale, unrotated_decoder, decoder/);
  assert.match((await cli(["finetune", "nope", "--runs-dir", runs])).err, /no run "nope"/);
});

test("a multi-phase config: phase column, per-phase evaluation, s held at 1 under the penalty", async () => {
  const file = path.join(dir, "phases.yaml");
  fs.writeFileSync(file, BASE.replace("variant: standard", "variant: scaled").replace("  steps: 600\n", "") + `  phases:
    - { name: sparse, steps: 200 }
    - { name: polish, tokens: 25600, sparsity_coefficient: 0, mode: decoder, warmup_steps: 0 }
`);
  const r = await cli(["train", file, "--runs-dir", runs, "--run-id", "phased"]);
  assert.equal(r.code, 0, r.err);
  const rows = fs.readFileSync(path.join(runs, "phased", "metrics.csv"), "utf8").trim().split("\n").slice(1).map((l) => l.split(","));
  assert.deepEqual([...new Set(rows.map((c) => c[1]))], ["sparse", "polish"]);
  assert.equal(rows.at(-1)![0], "300", "25600 tokens = 100 steps of 256");
  const ev = evalOf("phased");
  assert.deepEqual(ev.phases.map((p: { phase: string; step: number }) => [p.phase, p.step]), [["sparse", 200], ["polish", 300]]);
  // sae eval re-evaluates the final weights (fixed input bias and s folded in: the same SAE up to
  // float32 rounding) and keeps the phase list
  const again = await cli(["eval", "phased", "--runs-dir", runs, "--json"]);
  assert.equal(again.code, 0, again.err);
  assert.ok(Math.abs(JSON.parse(again.out).fvu - ev.fvu) < 1e-6 * ev.fvu, `fvu ${JSON.parse(again.out).fvu} vs ${ev.fvu}`);
  assert.equal(evalOf("phased").phases.length, 2);
  const ck = readCheckpoint(path.join(runs, "phased", "checkpoints", "step-0000200.json"), createModel(loadConfig(path.join(runs, "phased", "config.yaml")).config));
  assert.ok(ck.p.get("s").every((v) => v === 1), "s must stay exactly 1 while the penalty is on");
  const bad = path.join(dir, "badphases.yaml");
  fs.writeFileSync(bad, BASE.replace("  steps: 600\n", "") + "  phases:\n    - { name: a, steps: 10, tokens: 100 }\n");
  const e = await cli(["train", bad, "--runs-dir", runs]);
  assert.equal(e.code, 2);
  assert.match(e.err, /give exactly one of steps and tokens/);
  fs.writeFileSync(bad, BASE + "  phases:\n    - { name: a, steps: 10 }\n");
  assert.match((await cli(["train", bad, "--runs-dir", runs])).err, /with train.phases, each phase sets its own length/);
  fs.writeFileSync(bad, BASE.replace("  steps: 600\n", "") + "  phases:\n    - { name: a, steps: 10, mode: scale }\n");
  assert.match((await cli(["train", bad, "--runs-dir", runs])).err, /phase 1 \(a\): standard has no fine-tuning mode scale[\s\S]*converts to scaled/);
});

/** Gaussian elimination with partial pivoting, float64 */
function solve(A: Float64Array, b: Float64Array, n: number): Float64Array {
  const M = Float64Array.from(A), x = Float64Array.from(b);
  for (let c = 0; c < n; c++) {
    let piv = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r * n + c]) > Math.abs(M[piv * n + c])) piv = r;
    if (piv !== c) {
      for (let k = 0; k < n; k++) [M[c * n + k], M[piv * n + k]] = [M[piv * n + k], M[c * n + k]];
      [x[c], x[piv]] = [x[piv], x[c]];
    }
    for (let r = c + 1; r < n; r++) {
      const f = M[r * n + c] / M[c * n + c];
      if (f === 0) continue;
      for (let k = c; k < n; k++) M[r * n + k] -= f * M[c * n + k];
      x[r] -= f * x[c];
    }
  }
  for (let c = n - 1; c >= 0; c--) {
    let s = x[c];
    for (let k = c + 1; k < n; k++) s -= M[c * n + k] * x[k];
    x[c] = s / M[c * n + c];
  }
  return x;
}
