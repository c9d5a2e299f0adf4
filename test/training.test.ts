// Training behaviour: the shrinkage toy, the unit-norm constraint, frozen parameters, resume-exact
// data, and the scaling-factor fold.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createStandard } from "../src/sae/standard/index.ts";
import { createTopK } from "../src/sae/topk/fast.ts";
import { createBatchTopK } from "../src/sae/batchtopk/fast.ts";
import { ParamSet } from "../src/sae/params.ts";
import { jsEngine } from "../src/engine/js.ts";
import { selectEngine } from "../src/engine/index.ts";
import { optimizerStep } from "../src/train/step.ts";
import { foldScale } from "../src/sae/init.ts";
import { Rng } from "../src/rng.ts";
import { SyntheticSource, firingProbabilities } from "../src/data/synthetic.ts";
import { randn } from "./helpers.ts";
import { codeValue, type SaeModel } from "../src/sae/variant.ts";
import { VARIANTS, createModel } from "../src/sae/index.ts";
import { configFromObject } from "../src/config/load.ts";

const settings = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, gradClip: 0, dead: null };

test("shrinkage: one feature, unit atom, penalty λ → the code is λ/2 below the true activation", () => {
  // Gated paper Fig. 2 / docs/variants.md#shrinkage: minimising (a − f)² + λf over the encoder gives
  // f = a − λ/2. b_dec is frozen at 0 (a free b_dec would absorb the offset).
  const D = 4, lambda = 0.5;
  const model = createStandard({ D, H: 1 }, { flavour: "constrained", applyBDecToInput: false });
  const g = new Float64Array([0.5, -0.5, 0.5, 0.5]);
  const s = { p: new ParamSet(model.specs, Float64Array), m: new ParamSet(model.specs, Float64Array), v: new ParamSet(model.specs, Float64Array), adamT: 0 };
  s.p.get("W_dec").set(g);
  s.p.get("W_enc").set(g.map((v) => 0.3 * v));
  const grads = s.p.like();
  const rng = new Rng(1);
  const B = 64;
  for (let step = 0; step < 3000; step++) {
    const X = new Float64Array(B * D);
    for (let b = 0; b < B; b++) {
      const a = 0.5 + rng.next();
      for (let d = 0; d < D; d++) X[b * D + d] = a * g[d];
    }
    optimizerStep(jsEngine, model, s, grads, X, B, { ...settings, lr: step < 2000 ? 1e-2 : 1e-3, coeff: lambda, frozen: new Set(["b_dec"]) });
  }
  assert.deepEqual([...s.p.get("b_dec")], [0, 0, 0, 0], "frozen b_dec moved");
  for (const a of [0.8, 1.0, 1.3]) {
    const X = g.map((v) => a * v);
    const r = model.forward({ e: jsEngine, p: s.p, X, B: 1, coeff: 0, dead: null });
    const f = codeValue(r.code, 1, 0, 0);
    assert.ok(Math.abs(f - (a - lambda / 2)) < 5e-3, `a = ${a}: code ${f}, expected ${a - lambda / 2}`);
  }
});

for (const variant of ["standard", "topk"] as const) {
  test(`${variant}: decoder rows stay at unit norm after steps`, () => {
    const { engine: e } = selectEngine();
    const D = 16, H = 48, B = 32;
    const model = variant === "topk" ? createTopK({ D, H }, { k: 4, kAux: 8, auxCoefficient: 1 / 32, applyBDecToInput: true }) : createStandard({ D, H }, { flavour: "constrained", applyBDecToInput: true });
    const s = { p: new ParamSet(model.specs), m: new ParamSet(model.specs), v: new ParamSet(model.specs), adamT: 0 };
    s.p.buf.set(randn(s.p.buf.length, new Rng(3), 0.3, Float32Array));
    const grads = s.p.like();
    const dead = new Uint8Array(H).map((_, i) => (i < 10 ? 1 : 0));
    for (let step = 0; step < 20; step++) {
      const X = randn(B * D, new Rng(4, step), 1, Float32Array);
      optimizerStep(e, model, s, grads, X, B, { ...settings, coeff: 0.1, dead });
    }
    const norms = new Float32Array(H);
    e.rowNorms(s.p.get("W_dec"), H, D, norms);
    for (const n of norms) assert.ok(Math.abs(n - 1) < 1e-6, `decoder row norm ${n}`);
  });
}

test("topk, batchtopk: the gradients their backward writes whole need no zeroing, and its Σ g² is the step's norm (AuxK dense, sparse, off)", () => {
  // TopK writes W_enc's and W_dec's gradients row by row and sums their squares on the way
  // (docs/training.md#one-step). Against the same model with both turned off (zeroed gradients, the
  // step's own sum), from gradients left full of NaN: the same norm to float64 rounding, the same
  // weights to float32 rounding (the clip factor comes from that norm), clipping on.
  const { engine: e } = selectEngine();
  const D = 16, H = 48, B = 32;
  for (const [what, dead, auxPath, create] of [["AuxK dense", 6, "dense", createTopK], ["AuxK sparse", 40, "sparse", createTopK], ["no dead latents", 0, "auto", createTopK], ["batchtopk, AuxK dense", 6, "dense", createBatchTopK], ["batchtopk, AuxK sparse", 40, "sparse", createBatchTopK]] as const) {
    const model: SaeModel = create({ D, H }, { k: 4, kAux: 4, auxCoefficient: 0.5, applyBDecToInput: true, auxPath });
    const legacy = { ...model, writesGradients: undefined, backward: (...a: Parameters<typeof model.backward>) => void model.backward(...a) };
    const mask = new Uint8Array(H).map((_, i) => (i < dead ? 1 : 0));
    const states = [model, legacy].map(() => {
      const st = { p: new ParamSet(model.specs), m: new ParamSet(model.specs), v: new ParamSet(model.specs), adamT: 0 };
      st.p.buf.set(randn(st.p.buf.length, new Rng(3), 0.3, Float32Array));
      return st;
    });
    const grads = [states[0].p.like(), states[1].p.like()];
    for (let step = 0; step < 3; step++) {
      const X = randn(B * D, new Rng(4, step), 1, Float32Array);
      grads[0].buf.fill(NaN);
      const norms = [model, legacy].map((m, j) => optimizerStep(e, m, states[j], grads[j], X, B, { ...settings, gradClip: 0.05, coeff: 0, dead: dead ? mask : null }).gradNorm);
      assert.ok(norms[1] > 0.05, "clipping is on");
      assert.ok(Math.abs(norms[0] - norms[1]) <= 1e-12 * norms[1], `${what}, step ${step}: norm ${norms[0]} against ${norms[1]}`);
      const [a, b] = [states[0].p.buf, states[1].p.buf];
      for (let i = 0; i < a.length; i++) assert.ok(Number.isFinite(a[i]) && Math.abs(a[i] - b[i]) <= 1e-6, `${what}, step ${step}: weight ${i} ${a[i]} against ${b[i]}`);
    }
  }
});

test("every variant: a step does not depend on what the gradient buffer held before it", () => {
  // the step zeroes what the backward adds to and skips what it writes whole (writesGradients):
  // a variant that declared writes it only adds to (Matryoshka shares BatchTopK's fields) would
  // carry the last step's gradients, here NaN, into this one
  const { engine: e } = selectEngine();
  const D = 12, H = 40, B = 16;
  for (const v of VARIANTS) {
    const c = configFromObject({ data: { d_in: D }, sae: { variant: v.name, d_sae: H, k: 4, matryoshka_prefixes: [8, 40] } }).config;
    const model = createModel(c);
    const after = [0, NaN].map((fill) => {
      const st = { p: new ParamSet(model.specs), m: new ParamSet(model.specs), v: new ParamSet(model.specs), adamT: 0 };
      st.p.buf.set(randn(st.p.buf.length, new Rng(5), 0.3, Float32Array));
      if (model.specs.some((sp) => sp.name === "threshold")) st.p.get("threshold").fill(0.05);
      const grads = st.p.like();
      grads.buf.fill(fill);
      const dead = new Uint8Array(H).map((_, i) => (i % 5 === 0 ? 1 : 0));
      optimizerStep(e, model, st, grads, randn(B * D, new Rng(6), 1, Float32Array), B, { ...settings, gradClip: 1, coeff: 0.1, dead });
      return st.p.buf;
    });
    assert.deepEqual(after[1], after[0], `${v.name}: the step read stale gradients`);
  }
});

test("april flavour: the decoder is free (row norms move away from their init)", () => {
  const D = 8, H = 12, B = 16;
  const model = createStandard({ D, H }, { flavour: "april", applyBDecToInput: false });
  const s = { p: new ParamSet(model.specs, Float64Array), m: new ParamSet(model.specs, Float64Array), v: new ParamSet(model.specs, Float64Array), adamT: 0 };
  s.p.buf.set(randn(s.p.buf.length, new Rng(5), 0.3));
  jsEngine.normalizeRows(s.p.get("W_dec"), H, D);
  const grads = s.p.like();
  for (let step = 0; step < 30; step++) optimizerStep(jsEngine, model, s, grads, randn(B * D, new Rng(6, step)), B, { ...settings, coeff: 0.1 });
  const norms = new Float64Array(H);
  jsEngine.rowNorms(s.p.get("W_dec"), H, D, norms);
  assert.ok(norms.some((n) => Math.abs(n - 1) > 1e-3));
});

test("folding the input scale into the weights keeps the latents and maps reconstructions to raw units", () => {
  const D = 6, H = 10, B = 5, c = 0.37;
  for (const model of [createStandard({ D, H }, { flavour: "april", applyBDecToInput: true }), createTopK({ D, H }, { k: 3, kAux: 2, auxCoefficient: 0, applyBDecToInput: true })]) {
    const p = new ParamSet(model.specs, Float64Array);
    p.buf.set(randn(p.buf.length, new Rng(7), 0.5));
    const raw = randn(B * D, new Rng(8));
    const scaledX = raw.map((v) => v * c);
    const a = model.forward({ e: jsEngine, p, X: scaledX, B, coeff: 0, dead: null });
    const codeA = a.code.kind === "dense" ? [...a.code.F] : [...a.code.val];
    const xhatA = [...a.Xhat].map((v) => v / c);
    foldScale(p, c);
    const b = model.forward({ e: jsEngine, p, X: raw, B, coeff: 0, dead: null });
    const codeB = b.code.kind === "dense" ? [...b.code.F] : [...b.code.val];
    codeA.forEach((v, i) => assert.ok(Math.abs(v - codeB[i]) < 1e-12));
    xhatA.forEach((v, i) => assert.ok(Math.abs(v - b.Xhat[i]) < 1e-12));
  }
});

test("synthetic data: batches are a function of (seed, index); firing rates match the profile", () => {
  const cfg = { n_features: 64, mean_active: 3, decay: 0.97, correlation: 0, magnitude_min: 0.5, magnitude_max: 1, noise: 0 };
  const a = new SyntheticSource(cfg, 8, 11), b = new SyntheticSource(cfg, 8, 11);
  assert.deepEqual(a.trainBatch(5, 16), b.trainBatch(5, 16));
  assert.notDeepEqual(a.trainBatch(5, 16), a.trainBatch(6, 16));
  assert.notDeepEqual(a.evalSet(16), a.trainBatch(0, 16));
  const p = firingProbabilities(64, 0.97, 3);
  assert.ok(Math.abs(p.reduce((s, v) => s + v, 0) - 3) < 1e-9);
  assert.ok(p[0] > p[63] && Math.abs(p[1] / p[0] - 0.97) < 1e-12);
  // realised mean number of active features, from the data's projection on each true feature
  // (nearly orthogonal in D = 512 when few are active)
  const big = new SyntheticSource({ ...cfg, n_features: 32, mean_active: 2 }, 512, 3);
  const N = 4000, X = big.trainBatch(0, N);
  let active = 0;
  for (let n = 0; n < N; n++) for (let g = 0; g < 32; g++) {
    let dot = 0;
    for (let d = 0; d < 512; d++) dot += X[n * 512 + d] * big.features[g * 512 + d];
    if (dot > 0.3) active++;
  }
  assert.ok(Math.abs(active / N - 2) < 0.15, `mean active ${active / N}, expected 2`);
});

test("synthetic data: correlated firing keeps the marginal rates", () => {
  const cfg = { n_features: 16, mean_active: 2, decay: 1, correlation: 0.6, magnitude_min: 1, magnitude_max: 1, noise: 0 };
  const src = new SyntheticSource(cfg, 256, 5);
  const N = 4000, X = src.trainBatch(0, N);
  let active = 0, both = 0;
  for (let n = 0; n < N; n++) {
    const on: boolean[] = [];
    for (let g = 0; g < 16; g++) {
      let dot = 0;
      for (let d = 0; d < 256; d++) dot += X[n * 256 + d] * src.features[g * 256 + d];
      on.push(dot > 0.5);
    }
    active += on.filter(Boolean).length;
    if (on[0] && on[1]) both++;
  }
  assert.ok(Math.abs(active / N - 2) < 0.15, `mean active ${active / N}`);
  // independent: P(both) = (1/8)² ≈ 0.016; correlated: clearly more
  assert.ok(both / N > 0.03, `P(feature 0 and 1 together) = ${both / N}`);
});

test("safetensors: round trip of F32, F64 and I32 tensors with metadata; truncated files are rejected", async () => {
  const { writeSafetensors, readSafetensors } = await import("../src/io/safetensors.ts");
  const fs = await import("node:fs");
  const path = await import("node:path");
  const { tmpDir } = await import("./helpers.ts");
  const file = path.join(tmpDir(), "t.safetensors");
  writeSafetensors(file, {
    a: { dtype: "F32", shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6.5]) },
    b: { dtype: "F64", shape: [2], data: new Float64Array([Math.PI, -1e300]) },
    c: { dtype: "I32", shape: [1], data: new Int32Array([-7]) },
  }, { note: "hi" });
  const { tensors, metadata } = readSafetensors(file);
  assert.deepEqual([...tensors.a.data], [1, 2, 3, 4, 5, 6.5]);
  assert.deepEqual(tensors.a.shape, [2, 3]);
  assert.deepEqual([...tensors.b.data], [Math.PI, -1e300]);
  assert.deepEqual([...tensors.c.data], [-7]);
  assert.equal(metadata.note, "hi");
  // the header length is 8-byte aligned, as the format recommends
  assert.equal(Number(fs.readFileSync(file).readBigUInt64LE(0)) % 8, 0);
  const bytes = fs.readFileSync(file);
  fs.writeFileSync(file, bytes.subarray(0, bytes.length - 4));
  assert.throws(() => readSafetensors(file), /t\.safetensors is not a valid safetensors file: tensor c ends at byte/);
  fs.writeFileSync(file, bytes.subarray(0, 5));
  assert.throws(() => readSafetensors(file), /shorter than its 8-byte header/);
});
