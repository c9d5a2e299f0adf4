// Autodiff as the oracle: for every variant, flavour and parameter, the hand-written backward of
// the fast CPU path (float32, TypeScript reference engine) against tf.variableGrads of the same
// variant's equations (src/sae/<variant>/equations.ts) on the tfjs CPU backend, on tiny odd shapes
// with ties at the top-k cut, rows with fewer than K positives, dead latents (AuxK), the
// straight-through band of JumpReLU and Gated's stop-gradient decoder. This covers what the
// finite-difference checks cannot: the STE and stop-gradient terms.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { jsEngine } from "../src/engine/js.ts";
import { tfOps, type Tensor } from "../src/engine/tfjs.ts";
import { configFromObject } from "../src/config/load.ts";
import type { Config } from "../src/config/schema.ts";
import { createModel } from "../src/sae/index.ts";
import { ParamSet } from "../src/sae/params.ts";
import type { ForwardResult, SaeModel } from "../src/sae/variant.ts";
import { preActivations, type EqContext } from "../src/sae/ops.ts";
import { eqContext } from "../src/train/tfjs-stepper.ts";
import { variantDef } from "../src/sae/index.ts";
import { createStandard } from "../src/sae/standard/index.ts";
import { createTanh } from "../src/sae/tanh/index.ts";
import { createScaled } from "../src/sae/scaled/index.ts";
import { createGated } from "../src/sae/gated/fast.ts";
import { createJumpRelu } from "../src/sae/jumprelu/fast.ts";
import { createTopK } from "../src/sae/topk/fast.ts";
import { createBatchTopK } from "../src/sae/batchtopk/fast.ts";
import { Rng } from "../src/rng.ts";

interface HandOpts { B: number; coeff: number; dead: Uint8Array | null; training?: boolean }

/** The fast path's forward and hand-written backward: the one place that calls the model's contract. */
function handGrads(model: SaeModel, params: ParamSet, X: Float32Array, opts: HandOpts): { fwd: ForwardResult; grads: ParamSet } {
  const inp = { e: jsEngine, p: params, X, B: opts.B, coeff: opts.coeff, dead: opts.dead, training: opts.training ?? true };
  const fwd = model.forward(inp);
  const grads = params.like();
  model.backward(inp, fwd.state, grads);
  return { fwd, grads };
}

const D = 7, H = 13, B = 5;
/** norm-wise relative error per parameter, and the elementwise bound |a − h| ≤ TOL·(|h| + max|h|) */
const TOL = 1e-4;
const ops = tfOps(tf);

before(async () => {
  tf.env().set("PROD", true);
  await tf.setBackend("cpu");
});

function config(sae: Record<string, unknown>): Config {
  return configFromObject({ data: { d_in: D }, sae: { d_sae: H, ...sae } }).config;
}

function randomParams(model: SaeModel, seed: number): ParamSet {
  const p = new ParamSet(model.specs);
  const rng = new Rng(seed, 3);
  for (let i = 0; i < p.buf.length; i++) p.buf[i] = 0.5 * rng.normal();
  if (p.views.s) p.get("s").forEach((_, i, s) => (s[i] = 0.5 + rng.next()));
  return p;
}

function randomX(seed: number, n = B): Float32Array {
  const rng = new Rng(seed, 4);
  return Float32Array.from({ length: n * D }, () => rng.normal());
}

interface AutoResult { loss: number; mse: number; sparsity: number; aux: number; code: Float32Array; P: Float32Array; grads: Record<string, Float32Array>; updates: Record<string, Float32Array> }

/** tf.variableGrads of the equations at the same parameters and batch (the parameters are read before the fast path runs: BatchTopK's forward moves its threshold). */
function autoGrads(c: Config, model: SaeModel, params: ParamSet, X: Float32Array, opts: HandOpts & { fixedInputBias?: Float32Array }): AutoResult {
  const vars: Record<string, tf.Variable> = {};
  for (const s of model.specs) vars[s.name] = tf.variable(tf.tensor(params.get(s.name), s.shape, "float32"));
  const trainable = model.specs.filter((s) => !(model.nonTrainable ?? []).includes(s.name)).map((s) => vars[s.name]);
  try {
    return tf.tidy((): never => {
      const x = tf.tensor2d(X, [opts.B, D]);
      const ctx: EqContext<Tensor> = eqContext(c.sae, {
        coeff: opts.coeff,
        dead: opts.dead ? tf.tensor1d(Float32Array.from(opts.dead)) : null,
        training: opts.training ?? true,
        fixedInputBias: opts.fixedInputBias ? tf.tensor1d(opts.fixedInputBias) : null,
      });
      const eq = variantDef(c.sae.variant).equations;
      let kept: Tensor[] = [], updateNames: string[] = [];
      const { value, grads } = tf.variableGrads(() => {
        const out = eq.loss(ops, vars, x, ctx);
        updateNames = Object.keys(out.updates ?? {});
        kept = [out.mse, out.sparsity, out.aux, out.code, ...Object.values(out.updates ?? {})].map((t) => tf.keep(t));
        return out.loss as tf.Scalar;
      }, trainable);
      const [mse, sparsity, aux, code, ...ups] = kept;
      const names = Object.fromEntries(model.specs.map((s) => [vars[s.name].name, s.name]));
      const r: AutoResult = {
        loss: value.dataSync()[0], mse: mse.dataSync()[0], sparsity: sparsity.dataSync()[0], aux: aux.dataSync()[0],
        code: code.dataSync() as Float32Array,
        P: c.sae.variant === "gated" ? new Float32Array() : (preActivations(ops, vars as Record<string, Tensor>, x, ctx).dataSync() as Float32Array),
        grads: Object.fromEntries(Object.entries(grads).map(([n, g]) => [names[n], g.dataSync() as Float32Array])),
        updates: Object.fromEntries(updateNames.map((n, i) => [n, ups[i].dataSync() as Float32Array])),
      };
      for (const t of kept) t.dispose();
      return r as never; // plain numbers: nothing for tidy to keep
    });
  } finally {
    for (const v of Object.values(vars)) v.dispose();
  }
}

function dense(fwd: ForwardResult, Bn = B): Float32Array {
  const F = new Float32Array(Bn * H);
  if (fwd.code.kind === "dense") F.set(fwd.code.F);
  else for (let b = 0; b < Bn; b++) for (let j = 0; j < fwd.code.k; j++) if (fwd.code.val[b * fwd.code.k + j] !== 0) F[b * H + fwd.code.idx[b * fwd.code.k + j]] = fwd.code.val[b * fwd.code.k + j];
  return F;
}

/**
 * Asserts the two computations agree: loss terms, the code's support and values, and every
 * trainable parameter's gradient. Returns the number of gradient entries compared.
 */
function agree(label: string, model: SaeModel, hand: { fwd: ForwardResult; grads: ParamSet }, auto: AutoResult, Bn = B): number {
  const t = hand.fwd.terms;
  for (const k of ["loss", "mse", "sparsity", "aux"] as const) {
    assert.ok(Math.abs(t[k] - auto[k]) <= TOL * Math.max(1, Math.abs(t[k])), `${label}: ${k} ${t[k]} (fast) vs ${auto[k]} (equations)`);
  }
  const F = dense(hand.fwd, Bn);
  for (let j = 0; j < F.length; j++) {
    assert.equal(F[j] > 0, auto.code[j] > 0, `${label}: the code differs at row ${Math.floor(j / H)}, latent ${j % H} (fast ${F[j]}, equations ${auto.code[j]})`);
    assert.ok(Math.abs(F[j] - auto.code[j]) <= TOL * (1 + Math.abs(F[j])), `${label}: code value at ${j}`);
  }
  let compared = 0;
  for (const { name } of model.specs) {
    if ((model.nonTrainable ?? []).includes(name)) continue;
    const h = hand.grads.get(name), a = auto.grads[name] ?? new Float32Array(h.length);
    let num = 0, den = 0, hmax = 0;
    for (let i = 0; i < h.length; i++) {
      num += (a[i] - h[i]) ** 2;
      den += h[i] ** 2;
      hmax = Math.max(hmax, Math.abs(h[i]));
    }
    assert.ok(den > 0, `${label}: the fast gradient of ${name} is zero: the case does not exercise it`);
    assert.ok(Math.sqrt(num / den) < TOL, `${label}: ${name}: relative error ${Math.sqrt(num / den)}`);
    for (let i = 0; i < h.length; i++) {
      assert.ok(Math.abs(a[i] - h[i]) <= TOL * (Math.abs(h[i]) + hmax), `${label}: ${name}[${i}]: fast ${h[i]}, autodiff ${a[i]}`);
      compared++;
    }
  }
  return compared;
}

/** trainable entries of a model */
const trainableSize = (m: SaeModel) => m.specs.filter((s) => !(m.nonTrainable ?? []).includes(s.name)).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);

function check(label: string, c: Config, model: SaeModel, p: ParamSet, X: Float32Array, opts: HandOpts & { fixedInputBias?: Float32Array }, Bn = B): { auto: AutoResult; hand: { fwd: ForwardResult; grads: ParamSet } } {
  const auto = autoGrads(c, model, p, X, opts);
  const hand = handGrads(model, p, X, opts);
  assert.equal(agree(label, model, hand, auto, Bn), trainableSize(model), `${label}: every trainable entry compared`);
  return { auto, hand };
}

// ---- the ReLU family: Standard (both flavours), TanH, Scaled; dense and sparse fast paths ----

const reluCases = [
  { label: "standard constrained", sae: { variant: "standard", flavour: "constrained" }, make: (path: "dense" | "sparse", apply: boolean) => createStandard({ D, H }, { flavour: "constrained", applyBDecToInput: apply, path }) },
  { label: "standard april", sae: { variant: "standard", flavour: "april" }, make: (path: "dense" | "sparse", apply: boolean) => createStandard({ D, H }, { flavour: "april", applyBDecToInput: apply, path }) },
  { label: "tanh april", sae: { variant: "tanh", flavour: "april", tanh_scale: 1.7 }, make: (path: "dense" | "sparse", apply: boolean) => createTanh({ D, H }, { tanhScale: 1.7, flavour: "april", applyBDecToInput: apply, path }) },
  { label: "tanh constrained", sae: { variant: "tanh", flavour: "constrained", tanh_scale: 1.7 }, make: (path: "dense" | "sparse", apply: boolean) => createTanh({ D, H }, { tanhScale: 1.7, flavour: "constrained", applyBDecToInput: apply, path }) },
  { label: "scaled", sae: { variant: "scaled" }, make: (path: "dense" | "sparse", apply: boolean) => createScaled({ D, H }, { applyBDecToInput: apply, path }) },
];

for (const rc of reluCases) {
  for (const apply of [true, false]) {
    test(`autodiff parity: ${rc.label}, apply_b_dec_to_input=${apply}: createModel and the forced dense and sparse paths`, () => {
      const c = config({ ...rc.sae, apply_b_dec_to_input: apply });
      const models = [createModel(c), rc.make("dense", apply), rc.make("sparse", apply)];
      for (const [i, model] of models.entries()) {
        const p = randomParams(model, 10 + i);
        const { auto } = check(`${rc.label} #${i}`, c, model, p, randomX(20 + i), { B, coeff: 0.3, dead: null });
        assert.ok(auto.sparsity > 0 && auto.code.some((v) => v > 0) && auto.code.some((v) => v === 0), "the penalty is on and the code has both active and inactive entries");
      }
    });
  }
}

test("autodiff parity: standard with a fixed input bias (encoder frozen, b_dec trains): b_dec learns through the decoder only", () => {
  const c = config({ variant: "standard" });
  const fib = Float32Array.from({ length: D }, (_, d) => 0.1 * (d - 3));
  const model = createModel(c, fib);
  const p = randomParams(model, 31);
  const X = randomX(32);
  const { hand } = check("standard, fixed input bias", c, model, p, X, { B, coeff: 0.2, dead: null, fixedInputBias: fib });
  // without the encoder path, db_dec is Σ_b (2/B)(x̂ − x) exactly
  const xhat = hand.fwd.Xhat;
  for (let d = 0; d < D; d++) {
    let g = 0;
    for (let b = 0; b < B; b++) g += (2 / B) * (xhat[b * D + d] - X[b * D + d]);
    assert.ok(Math.abs(hand.grads.get("b_dec")[d] - g) < 1e-5);
  }
});

// ---- Gated: both flavours; the paper's stop-gradient decoder copy ----

for (const flavour of ["paper", "saelens"] as const) {
  for (const apply of [true, false]) {
    test(`autodiff parity: gated ${flavour}, apply_b_dec_to_input=${apply}: every parameter, the decoder through the ${flavour === "paper" ? "stop-gradient" : "plain"} auxiliary path`, () => {
      const c = config({ variant: "gated", flavour, apply_b_dec_to_input: apply });
      for (const [i, model] of [createModel(c), createGated({ D, H }, { flavour, applyBDecToInput: apply, path: "sparse" })].entries()) {
        const p = randomParams(model, 40 + i);
        // open gates with a closed magnitude (f = 0, a > 0) and the reverse both occur
        p.get("b_mag").forEach((_, j, a) => (a[j] = j % 3 === 0 ? -1 : a[j]));
        const { auto } = check(`gated ${flavour} #${i}`, c, model, p, randomX(50 + i), { B, coeff: 0.3, dead: null });
        assert.ok(auto.aux > 0 && auto.sparsity > 0);
      }
    });
  }
}

test("autodiff parity: gated paper: the stop-gradient leaves W_dec and b_dec exactly the main reconstruction's gradient", () => {
  const c = config({ variant: "gated", flavour: "paper", apply_b_dec_to_input: false });
  const model = createModel(c);
  const p = randomParams(model, 61);
  const X = randomX(62);
  const paper = autoGrads(c, model, p, X, { B, coeff: 0.3, dead: null });
  const saelensLike = autoGrads(config({ variant: "gated", flavour: "saelens", apply_b_dec_to_input: false }), model, p, X, { B, coeff: 0, dead: null });
  // dW_dec from the main term alone: Fᵀ G with G = (2/B)(x̂ − x)
  const F = paper.code;
  const Wd = p.get("W_dec"), bd = p.get("b_dec");
  const G = new Float64Array(B * D);
  for (let b = 0; b < B; b++) for (let d = 0; d < D; d++) {
    let xh = bd[d];
    for (let i = 0; i < H; i++) xh += F[b * H + i] * Wd[i * D + d];
    G[b * D + d] = (2 / B) * (xh - X[b * D + d]);
  }
  for (let i = 0; i < H; i++) for (let d = 0; d < D; d++) {
    let g = 0;
    for (let b = 0; b < B; b++) g += F[b * H + i] * G[b * D + d];
    assert.ok(Math.abs(paper.grads.W_dec[i * D + d] - g) < 1e-5, `W_dec[${i},${d}]`);
  }
  // without the stop-gradient the decoder's gradient is different
  assert.ok(paper.grads.W_dec.some((v, j) => Math.abs(v - saelensLike.grads.W_dec[j]) > 1e-3));
});

// ---- TopK and BatchTopK with AuxK ----

/** params where latents 0..K−2 sit far above the rest and latents 5 and 9 are exact twins just below: a tie at the K-th place */
function tieParams(model: SaeModel, seed: number, K: number): ParamSet {
  const p = randomParams(model, seed);
  const We = p.get("W_enc"), be = p.get("b_enc");
  for (let i = 0; i < K - 1; i++) {
    be[i] = 4;
    for (let d = 0; d < D; d++) We[i * D + d] *= 0.05;
  }
  for (let d = 0; d < D; d++) We[9 * D + d] = We[5 * D + d] = 0.02 * We[5 * D + d];
  be[5] = be[9] = 2.5;
  return p;
}

/** rows of P with a tie between the k-th and (k+1)-th largest, and rows with fewer than k positives */
function rowStats(P: Float32Array, k: number): { ties: number; short: number } {
  let ties = 0, short = 0;
  for (let b = 0; b < P.length / H; b++) {
    const row = Array.from(P.subarray(b * H, (b + 1) * H)).sort((x, y) => y - x);
    if (row[k - 1] === row[k]) ties++;
    if (row.filter((v) => v > 0).length < k) short++;
  }
  return { ties, short };
}

const dead = Uint8Array.from({ length: H }, (_, i) => (i % 3 === 1 || i === 12 ? 1 : 0)); // 5 dead latents

for (const apply of [true, false]) {
  test(`autodiff parity: topk, apply_b_dec_to_input=${apply}: ties at the cut, rows with fewer than K positives, AuxK off and on`, () => {
    const K = 4;
    for (const kAux of [3, 8]) { // fewer than the 5 dead latents, and more (then all dead ones)
      const c = config({ variant: "topk", k: K, k_aux: kAux, aux_coefficient: 0.5, apply_b_dec_to_input: apply });
      const models = [createModel(c), ...(["dense", "sparse"] as const).map((auxPath) => createTopK({ D, H }, { k: K, kAux, auxCoefficient: 0.5, applyBDecToInput: apply, auxPath }))];
      for (const [i, model] of models.entries()) {
        const ties = tieParams(model, 70 + i, K);
        const r1 = check(`topk ties k_aux=${kAux} #${i}`, c, model, ties, randomX(80 + i), { B, coeff: 0, dead });
        assert.ok(rowStats(r1.auto.P, K).ties > 0, "a tie at the K-th place");
        assert.ok(r1.auto.aux > 0, "AuxK is on");
        const short = randomParams(model, 90 + i);
        short.get("b_enc").forEach((_, j, a) => (a[j] -= 1.5));
        const r2 = check(`topk short rows k_aux=${kAux} #${i}`, c, model, short, randomX(100 + i), { B, coeff: 0, dead });
        assert.ok(rowStats(r2.auto.P, K).short > 0, "a row with fewer than K positive pre-activations");
        const off = check(`topk no AuxK #${i}`, c, model, short, randomX(100 + i), { B, coeff: 0, dead: null });
        assert.equal(off.auto.aux, 0);
      }
    }
  });
}

test("autodiff parity: batchtopk training (ties across the batch, fewer positives than k·B, AuxK) and the threshold update; inference", () => {
  const K = 3;
  for (const auxPath of ["dense", "sparse"] as const) {
    const c = config({ variant: "batchtopk", k: K, k_aux: 3, aux_coefficient: 0.5 });
    const model = auxPath === "dense" ? createModel(c) : createBatchTopK({ D, H }, { k: K, kAux: 3, auxCoefficient: 0.5, applyBDecToInput: true, auxPath });
    for (const theta of [0, 0.8]) {
      // twin latents and twin rows: ties inside a row and across rows
      const p = tieParams(model, 110, 2);
      p.get("threshold")[0] = theta;
      const X = randomX(120);
      X.copyWithin(3 * D, 1 * D, 2 * D); // row 3 = row 1
      const r = check(`batchtopk θ=${theta} ${auxPath}`, c, model, p, X, { B, coeff: 0, dead });
      const kept = r.auto.code.filter((v) => v > 0);
      assert.equal(kept.length, K * B, "exactly k·B entries kept");
      const cut = Math.min(...kept);
      assert.ok(Array.from(r.auto.P).filter((v) => v === cut).length > 1, "a tie at the batch's cut");
      // the threshold: the fast path's forward moved p.threshold; the equations return the same update
      assert.ok(Math.abs(r.auto.updates.threshold[0] - p.get("threshold")[0]) < 1e-6, `θ update: fast ${p.get("threshold")[0]}, equations ${r.auto.updates.threshold[0]}`);
      assert.ok(Math.abs(p.get("threshold")[0] - (theta > 0 ? 0.99 * theta + 0.01 * cut : cut)) < 1e-6);
    }
    // fewer positives than k·B: every positive entry is kept
    const p = randomParams(model, 130);
    p.get("b_enc").forEach((_, j, a) => (a[j] -= 2));
    const r = check(`batchtopk few positives ${auxPath}`, c, model, p, randomX(131), { B, coeff: 0, dead });
    const positives = Array.from(r.auto.P).filter((v) => v > 0).length;
    assert.ok(positives > 0 && positives < K * B);
    assert.equal(r.auto.code.filter((v) => v > 0).length, positives);
  }
  // inference: f = r·1[r > θ], the forward only (the fast path has no inference backward)
  const c = config({ variant: "batchtopk", k: K });
  const model = createModel(c);
  const p = randomParams(model, 140);
  p.get("threshold")[0] = 0.7;
  const X = randomX(141);
  const auto = autoGrads(c, model, p, X, { B, coeff: 0, dead: null, training: false });
  const fwd = model.forward({ e: jsEngine, p, X, B, coeff: 0, dead: null, training: false });
  assert.ok(Math.abs(fwd.terms.mse - auto.mse) < TOL * fwd.terms.mse);
  const F = dense(fwd);
  assert.ok(F.some((v) => v > 0) && Array.from(auto.P).some((v) => v > 0 && v <= 0.7), "some positive values fall below θ");
  for (let j = 0; j < F.length; j++) assert.ok(Math.abs(F[j] - auto.code[j]) < 1e-6);
});

// ---- JumpReLU: log θ through both straight-through estimators ----

for (const apply of [false, true]) {
  test(`autodiff parity: jumprelu, apply_b_dec_to_input=${apply}: log_threshold through the STEs of the code and the L0 penalty`, () => {
    const eps = 0.3;
    const c = config({ variant: "jumprelu", jumprelu_bandwidth: eps, apply_b_dec_to_input: apply });
    const models = [createModel(c), createJumpRelu({ D, H }, { bandwidth: eps, unitNormDecoder: true, applyBDecToInput: apply, path: "sparse" })];
    for (const [i, model] of models.entries()) {
      const p = randomParams(model, 150 + i);
      const rng = new Rng(160 + i);
      p.get("log_threshold").forEach((_, j, a) => (a[j] = Math.log(0.2 + 0.4 * rng.next())));
      const X = randomX(170 + i);
      for (const coeff of [0, 0.05]) {
        const { auto } = check(`jumprelu #${i} λ=${coeff}`, c, model, p, X, { B, coeff, dead: null });
        // the case must hit the kernel's band on both sides of θ, and stay clear of its edges
        const theta = p.get("log_threshold").map(Math.exp);
        let below = 0, above = 0, nearEdge = Infinity;
        auto.P.forEach((v, j) => {
          const u = v - theta[j % H];
          if (Math.abs(u) < eps / 2) u > 0 ? above++ : below++;
          nearEdge = Math.min(nearEdge, Math.abs(Math.abs(u) - eps / 2), Math.abs(u));
        });
        assert.ok(below > 0 && above > 0, `band entries: ${below} below θ, ${above} above`);
        assert.ok(nearEdge > 1e-4, `an entry sits ${nearEdge} from a band edge or from θ: float32 rounding could flip it`);
      }
    }
  });
}
