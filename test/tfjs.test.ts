// The tfjs engine on the pure-JavaScript CPU backend (about 1 GFLOP/s, so small shapes and short
// runs): its step against the native optimiser step, no tensor leaks, every variant training,
// checkpoints that resume on the other engine, evaluation on either engine, quickstart parity.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { cli, tmpDir, trainInterrupted } from "./helpers.ts";
import { configFromObject, loadConfig } from "../src/config/load.ts";
import type { Config } from "../src/config/schema.ts";
import { jsEngine } from "../src/engine/js.ts";
import { loadTfjs } from "../src/engine/tfjs.ts";
import { createModel } from "../src/sae/index.ts";
import { ParamSet } from "../src/sae/params.ts";
import { VARIANT_NAMES as VARIANTS } from "../src/sae/index.ts";
import type { SaeModel } from "../src/sae/variant.ts";
import type { TrainState } from "../src/train/checkpoint.ts";
import { frozenParams } from "../src/train/freeze.ts";
import { optimizerStep } from "../src/train/step.ts";
import { TfjsStepper, tfjsStepper } from "../src/train/tfjs-stepper.ts";
import type { PhaseSetup } from "../src/train/stepper.ts";
import { Rng } from "../src/rng.ts";

const D = 7, H = 13, B = 16;

function tinyConfig(variant: string, extra: Record<string, unknown> = {}): Config {
  return configFromObject({ data: { d_in: D }, sae: { variant, d_sae: H, k: 3, k_aux: 4, jumprelu_bandwidth: 0.3 }, train: { dead_tokens_threshold: 48 }, ...extra }).config;
}

function startState(c: Config, seed: number): TrainState {
  const model = createModel(c);
  const p = new ParamSet(model.specs);
  const rng = new Rng(seed);
  for (let i = 0; i < p.buf.length; i++) p.buf[i] = 0.4 * rng.normal();
  if (p.views.s) p.get("s").forEach((_, i, s) => (s[i] = 0.8 + 0.4 * rng.next()));
  if (p.views.log_threshold) p.get("log_threshold").fill(Math.log(0.3));
  if (p.views.threshold) p.get("threshold").fill(0);
  if (model.unitNormDecoder) jsEngine.normalizeRows(p.get("W_dec"), H, D);
  // every other latent starts at the dead threshold: AuxK runs from the first step, until they fire
  const sinceFired = Float64Array.from({ length: H }, (_, i) => (i % 2 ? 48 : 0));
  return { p, m: p.like(), v: p.like(), sinceFired, step: 0, tokens: 0, adamT: 0, scale: 1, batchOffset: 0 };
}

/** n steps of the native optimiser step (TypeScript engine, float32) with the loop's dead-latent counters */
function nativeSteps(c: Config, s: TrainState, batches: Float32Array[], o: { coeff: number; frozen: Set<string> }): void {
  const model = createModel(c);
  const grads = s.p.like(), dead = new Uint8Array(H), fired = new Float32Array(H);
  for (const X of batches) {
    let nDead = 0;
    for (let i = 0; i < H; i++) nDead += dead[i] = s.sinceFired[i] >= c.train.dead_tokens_threshold ? 1 : 0;
    const { fwd } = optimizerStep(jsEngine, model, s, grads, X, B, { ...settingsOf(c), coeff: o.coeff, dead: nDead ? dead : null, frozen: o.frozen });
    fired.fill(0);
    if (fwd.code.kind === "dense") jsEngine.colSum(fwd.code.F, B, H, fired, false);
    else for (let j = 0; j < fwd.code.val.length; j++) if (fwd.code.val[j] > 0) fired[fwd.code.idx[j]] = 1;
    for (let i = 0; i < H; i++) s.sinceFired[i] = fired[i] > 0 ? 0 : s.sinceFired[i] + B;
  }
}

const LR = 3e-3;
const settingsOf = (c: Config) => ({ lr: LR, beta1: c.train.beta1, beta2: c.train.beta2, eps: c.train.eps, gradClip: 0.5 });
/** what the loop hands a phase's stepper */
const phase = (c: Config, model: SaeModel, frozen: ReadonlySet<string> = new Set()): PhaseSetup => ({ model, frozen, beta1: c.train.beta1, beta2: c.train.beta2, eps: c.train.eps, gradClip: 0.5, deadTokens: c.train.dead_tokens_threshold });

function batches(n: number, seed: number): Float32Array[] {
  const rng = new Rng(seed);
  // a few directions that fire, so some latents go quiet long enough to count as dead
  return Array.from({ length: n }, () => Float32Array.from({ length: B * D }, (_, j) => (j % D < 3 ? 1.5 : 0.3) * rng.normal()));
}

for (const variant of VARIANTS) {
  test(`tfjs step = native step: ${variant}, 8 steps with clipping, the decoder constraint, dead latents (AuxK) and the counters`, async () => {
    const { tf } = await loadTfjs();
    const c = tinyConfig(variant);
    const model = createModel(c);
    const frozen = frozenParams(model, c.train.phases[0], 0.05);
    const data = batches(8, 5);
    const native = startState(c, 3), viaTfjs = startState(c, 3);
    nativeSteps(c, native, data, { coeff: 0.05, frozen });
    const stepper = new TfjsStepper(tf, c, phase(c, model, frozen), viaTfjs);
    for (const X of data) stepper.step(X, B, LR, 0.05);
    const w = stepper.flush();
    stepper.sync();
    stepper.dispose();
    assert.equal(w.n, 8);
    assert.ok(w.gradNorm > settingsOf(c).gradClip, `gradient norm ${w.gradNorm}: the clip is active`);
    assert.deepEqual([...viaTfjs.sinceFired], [...native.sinceFired], "tokens-since-fired counters");
    if (variant === "topk" || variant === "batchtopk") assert.ok(w.aux > 0, "AuxK ran on the latents that started dead");
    assert.equal(viaTfjs.adamT, native.adamT);
    for (const { name } of model.specs) {
      const a = viaTfjs.p.get(name), b = native.p.get(name);
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
      // 8 Adam steps of lr 3e-3 move a parameter by up to 0.024; float32 differences stay far below
      assert.ok(worst < 1e-5, `${variant}: ${name} differs by ${worst}`);
    }
    if (variant === "batchtopk") assert.ok(viaTfjs.p.get("threshold")[0] > 0, "the threshold's running average moved");
    if (model.unitNormDecoder) {
      const norms = new Float32Array(H);
      jsEngine.rowNorms(viaTfjs.p.get("W_dec"), H, D, norms);
      for (const n of norms) assert.ok(Math.abs(n - 1) < 1e-6);
    }
  });
}

test("tfjs step: frozen parameters stay bit for bit, and Scaled's s is frozen while the penalty is on", async () => {
  const { tf } = await loadTfjs();
  for (const [variant, freeze, coeff, expectFrozen] of [["standard", ["decoder"], 0.05, ["W_dec", "b_dec"]], ["gated", ["encoder"], 0.05, ["W_enc", "b_gate", "r_mag", "b_mag"]], ["scaled", [], 0.05, ["s"]]] as const) {
    const c = tinyConfig(variant);
    const model = createModel(c);
    const frozen = frozenParams(model, { ...c.train.phases[0], freeze: [...freeze] }, coeff);
    assert.deepEqual([...frozen].sort(), [...expectFrozen].sort());
    const s = startState(c, 9);
    const before = Float32Array.from(s.p.buf);
    const stepper = new TfjsStepper(tf, c, phase(c, model, frozen), s);
    for (const X of batches(5, 10)) stepper.step(X, B, LR, coeff);
    stepper.sync();
    stepper.dispose();
    for (const { name } of model.specs) {
      const [a, b] = s.p.offsets[name];
      const same = s.p.buf.subarray(a, b).every((v, i) => v === before[a + i]);
      assert.equal(same, frozen.has(name), `${variant}: ${name} ${frozen.has(name) ? "moved though frozen" : "did not train"}`);
      if (frozen.has(name)) assert.ok(s.m.get(name).every((v) => v === 0), `${name}: Adam state of a frozen parameter`);
    }
  }
});

test("tfjs step: no tensor leaks over 50 steps (tf.memory().numTensors stays put)", async () => {
  const { tf } = await loadTfjs();
  for (const variant of ["topk", "jumprelu", "batchtopk"] as const) {
    const c = tinyConfig(variant);
    const model = createModel(c);
    const s = startState(c, 11);
    const data = batches(50, 12);
    const before = tf.memory().numTensors;
    const stepper = new TfjsStepper(tf, c, phase(c, model), s);
    stepper.step(data[0], B, LR, 0.05);
    const held = tf.memory().numTensors;
    let aux = 0;
    for (let i = 1; i < 50; i++) {
      stepper.step(data[i], B, LR, 0.05);
      if (i % 10 === 0) aux += stepper.flush().aux;
      if (i % 25 === 0) {
        stepper.window();
        stepper.sync();
      }
    }
    if (variant !== "jumprelu") assert.ok(aux > 0, "dead latents: the AuxK path ran too");
    assert.equal(tf.memory().numTensors, held, `${variant}: tensors after 50 steps`);
    stepper.dispose();
    assert.equal(tf.memory().numTensors, before, `${variant}: tensors after dispose`);
  }
});

// ---- through the CLI: run folders, checkpoints and evaluation shared with the native engine ----

const TINY = `name: tiny
seed: 4
data:
  d_in: 16
  synthetic: { n_features: 32, mean_active: 3, magnitude_min: 0.5 }
  eval_tokens: 1024
  norm_estimate_tokens: 1024
sae:
  d_sae: 48
  k: 4
  jumprelu_init_threshold: 0.1
  jumprelu_bandwidth: 0.05
train:
  steps: 60
  batch_size: 64
  lr: 0.01
  warmup_steps: 5
  sparsity_warmup_steps: 10
  dead_tokens_threshold: 2000
  log_every: 20
  precision: fp32 # the tfjs engine trains in float32; the native runs beside it must too (auto would pick bf16 where the CPU has it)
`;

function setup(text = TINY): { dir: string; cfg: string; runs: string } {
  const dir = tmpDir("sae-tfjs-");
  const cfg = path.join(dir, "tiny.yaml");
  fs.writeFileSync(cfg, text);
  return { dir, cfg, runs: path.join(dir, "runs") };
}

const metrics = (runs: string, id: string) => {
  const [head, ...rows] = fs.readFileSync(path.join(runs, id, "metrics.csv"), "utf8").trim().split("\n");
  const cols = head.split(",");
  return rows.map((r) => Object.fromEntries(r.split(",").map((v, i) => [cols[i], v])));
};

test("every variant trains on the tfjs CPU backend: the loss falls, and the run folder is complete", async () => {
  const { cfg, runs } = setup();
  for (const variant of VARIANTS) {
    const r = await cli(["train", cfg, "--runs-dir", runs, "--run-id", variant, "--engine", "tfjs", "--set", `sae.variant=${variant}`]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /tfjs engine, pure-JavaScript CPU backend/);
    const rows = metrics(runs, variant);
    assert.deepEqual(rows.map((x) => x.step), ["20", "40", "60"]);
    assert.ok(Number(rows[2].loss) < Number(rows[0].loss), `${variant}: loss ${rows[0].loss} → ${rows[2].loss}`);
    for (const f of ["final/sae_weights.safetensors", "final/cfg.json", "eval.json", "checkpoints/step-0000060.safetensors"]) assert.ok(fs.existsSync(path.join(runs, variant, f)), `${variant}: ${f}`);
    assert.match(JSON.parse(fs.readFileSync(path.join(runs, variant, "status.json"), "utf8")).engine, /^tfjs engine/);
  }
});

test("a checkpoint written by one engine resumes on the other, inside a logging window", async () => {
  const { cfg, runs } = setup();
  const { config } = loadConfig(cfg, [`runs_dir=${runs}`, "sae.variant=topk"]);
  const reference = await cli(["train", cfg, "--runs-dir", runs, "--run-id", "ref", "--engine", "native", "--set", "sae.variant=topk"]);
  assert.equal(reference.code, 0, reference.err);
  const tfjs = await loadTfjs();
  for (const [first, second] of [["native", "tfjs"], ["tfjs", "native"]] as const) {
    const id = `${first}-then-${second}`;
    await trainInterrupted(config, runs, id, 30, first === "tfjs" ? tfjsStepper(tfjs, config) : undefined);
    assert.ok(JSON.parse(fs.readFileSync(path.join(runs, id, "checkpoints", "step-0000030.json"), "utf8")).log_window.n === 10, "the checkpoint holds the open logging window");
    const r = await cli(["resume", id, "--runs-dir", runs, "--engine", second]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, second === "tfjs" ? /tfjs engine/ : /native engine|TypeScript engine/);
    // the same run, up to float32 rounding: the logged averages and the evaluation
    const a = metrics(runs, id), b = metrics(runs, "ref");
    assert.deepEqual(a.map((x) => x.step), b.map((x) => x.step));
    for (let i = 0; i < a.length; i++) for (const k of ["loss", "mse", "aux_loss", "fvu", "l0", "dead_frac"]) {
      assert.ok(Math.abs(Number(a[i][k]) - Number(b[i][k])) <= 1e-3 * Math.max(1, Math.abs(Number(b[i][k]))), `${id}: step ${a[i].step} ${k} ${a[i][k]} vs ${b[i][k]}`);
    }
    const ev = (run: string) => JSON.parse(fs.readFileSync(path.join(runs, run, "eval.json"), "utf8"));
    assert.ok(Math.abs(ev(id).fvu - ev("ref").fvu) < 1e-3 * ev("ref").fvu, `${id}: fvu ${ev(id).fvu} vs ${ev("ref").fvu}`);
  }
});

test("sae eval of a tfjs-trained run: the native engine and the tfjs forward give the same metrics", async () => {
  const { cfg, runs } = setup();
  for (const variant of ["batchtopk", "gated"]) {
    assert.equal((await cli(["train", cfg, "--runs-dir", runs, "--run-id", variant, "--engine", "tfjs", "--set", `sae.variant=${variant}`])).code, 0);
    const native = await cli(["eval", variant, "--runs-dir", runs, "--json", "--engine", "native"]);
    assert.equal(native.code, 0, native.err);
    const viaTfjs = await cli(["eval", variant, "--runs-dir", runs, "--json", "--engine", "tfjs"]);
    assert.equal(viaTfjs.code, 0, viaTfjs.err);
    assert.match(viaTfjs.err, /forward passes: tfjs engine/);
    const a = JSON.parse(native.out), b = JSON.parse(viaTfjs.out);
    for (const k of ["mse", "fvu", "l0", "l1", "dead_frac", "gamma", "cosine"]) assert.ok(Math.abs(a[k] - b[k]) <= 1e-4 * Math.max(1, Math.abs(a[k])), `${variant}: ${k} ${a[k]} (native) vs ${b[k]} (tfjs)`);
    assert.ok(a.l0 > 0 && a.fvu < 1);
  }
});

test("quickstart parity: 200 steps on the tfjs CPU backend and on the native engine, same seed: FVU within 2%, the same L0", async () => {
  const { runs } = setup();
  // float32 on both sides: train.precision auto would give the native run bf16 GEMMs where the CPU has them
  const small = ["--set", "train.steps=200", "--set", "train.batch_size=64", "--set", "data.eval_tokens=4096", "--set", "train.log_every=100", "--set", "train.precision=fp32"];
  const quickstart = path.resolve(import.meta.dirname, "..", "configs", "quickstart.yaml");
  for (const engine of ["native", "tfjs"]) {
    const r = await cli(["train", quickstart, "--runs-dir", runs, "--run-id", engine, "--engine", engine, ...small]);
    assert.equal(r.code, 0, r.err);
  }
  const ev = (id: string) => JSON.parse(fs.readFileSync(path.join(runs, id, "eval.json"), "utf8"));
  const [n, t] = [ev("native"), ev("tfjs")];
  assert.ok(Math.abs(t.fvu - n.fvu) < 0.02 * n.fvu, `fvu ${t.fvu} (tfjs) vs ${n.fvu} (native)`);
  assert.ok(Math.abs(t.l0 - n.l0) < 1e-3 * n.l0, `l0 ${t.l0} (tfjs) vs ${n.l0} (native)`);
  assert.ok(n.l0 > 7.9 && n.l0 <= 8, "k = 8 (a few tokens have fewer positive pre-activations)");
});

test("--engine takes auto, native or tfjs; anything else is a usage error", async () => {
  const { cfg, runs } = setup();
  const r = await cli(["train", cfg, "--runs-dir", runs, "--engine", "cuda"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /--engine.*cuda.*Allowed choices are auto, native, tfjs/s);
  const bad = await cli(["train", cfg, "--runs-dir", runs, "--set", "train.engine=gpu"]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /train\.engine/);
});

test("sae doctor names the tfjs backends, the GPU or why there is none, and what auto picks", async () => {
  const r = await cli(["doctor"]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^tfjs: .*@tensorflow\/tfjs 4\.22\.0/m);
  assert.match(r.out, /^gpu: +(found|none: .+)/m);
  // this machine has no tfjs-node-gpu (its install cannot download libtensorflow): auto stays native
  if (!/@tensorflow\/tfjs-node-gpu \d/.test(r.out)) assert.match(r.out, /^auto: +train\.engine auto picks native/m);
});
