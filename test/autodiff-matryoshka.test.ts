// Autodiff parity for Matryoshka BatchTopK (docs/variants.md#matryoshka-batchtopk): the fast CPU
// path's hand-written backward (float32, TypeScript engine) against tf.variableGrads of
// src/sae/matryoshka/equations.ts on the tfjs CPU backend, for every trainable parameter, on tiny
// odd shapes: prefixes whose blocks all hold selected latents, twin latents tied at the batch's
// cut, fewer positives than k·B, AuxK with dead latents, both settings of the pre-encoder bias; and
// the θ update the equations hand back. (The machinery is test/autodiff.test.ts's, in small.)
import { test, before } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { jsEngine } from "../src/engine/js.ts";
import { tfOps, type Tensor } from "../src/engine/tfjs.ts";
import { configFromObject } from "../src/config/load.ts";
import type { Config } from "../src/config/schema.ts";
import { createModel, variantDef } from "../src/sae/index.ts";
import { ParamSet } from "../src/sae/params.ts";
import { codeValue, type SaeModel } from "../src/sae/variant.ts";
import { eqContext } from "../src/train/tfjs-stepper.ts";
import { Rng } from "../src/rng.ts";

const D = 7, H = 13, B = 5, K = 3;
const TOL = 1e-4;
const ops = tfOps(tf);

before(async () => {
  tf.env().set("PROD", true);
  await tf.setBackend("cpu");
});

const config = (sae: Record<string, unknown>): Config => configFromObject({ data: { d_in: D }, sae: { variant: "matryoshka", d_sae: H, k: K, k_aux: 3, aux_coefficient: 0.5, ...sae } }).config;

function params(model: SaeModel, seed: number, theta: number): ParamSet {
  const p = new ParamSet(model.specs);
  const rng = new Rng(seed, 3);
  for (let i = 0; i < p.buf.length; i++) p.buf[i] = 0.5 * rng.normal();
  p.get("threshold")[0] = theta;
  return p;
}

const batch = (seed: number) => {
  const rng = new Rng(seed, 4);
  return Float32Array.from({ length: B * D }, () => rng.normal());
};

/** the equations' loss terms, code, gradients of the trainable parameters and θ update, at p (read before the fast path moves θ) */
function auto(c: Config, model: SaeModel, p: ParamSet, X: Float32Array, dead: Uint8Array | null) {
  const vars = Object.fromEntries(model.specs.map((s) => [s.name, tf.variable(tf.tensor(p.get(s.name), s.shape, "float32"))]));
  const trainable = model.specs.filter((s) => !(model.nonTrainable ?? []).includes(s.name));
  try {
    return tf.tidy(() => {
      const ctx = eqContext<Tensor>(c.sae, { coeff: 0, dead: dead ? tf.tensor1d(Float32Array.from(dead)) : null, training: true, fixedInputBias: null });
      let kept: Tensor[] = [];
      const { value, grads } = tf.variableGrads(() => {
        const out = variantDef(c.sae.variant).equations.loss(ops, vars, tf.tensor2d(X, [B, D]), ctx);
        kept = [out.mse, out.aux, out.code, out.updates!.threshold].map((t) => tf.keep(t));
        return out.loss as tf.Scalar;
      }, trainable.map((s) => vars[s.name]));
      const [mse, aux, code, theta] = kept.map((t) => t.dataSync() as Float32Array);
      const byName = Object.fromEntries(trainable.map((s) => [s.name, grads[vars[s.name].name].dataSync() as Float32Array]));
      for (const t of kept) t.dispose();
      return { loss: value.dataSync()[0], mse: mse[0], aux: aux[0], code, theta: theta[0], grads: byName };
    });
  } finally {
    for (const v of Object.values(vars)) v.dispose();
  }
}

/** asserts agreement; returns the number of gradient entries compared */
function check(label: string, c: Config, model: SaeModel, p: ParamSet, X: Float32Array, dead: Uint8Array | null): { compared: number; code: Float32Array } {
  const a = auto(c, model, p, X, dead);
  const inp = { e: jsEngine, p, X, B, coeff: 0, dead, training: true };
  const f = model.forward(inp);
  const g = p.like();
  model.backward(inp, f.state, g);
  for (const k of ["loss", "mse", "aux"] as const) assert.ok(Math.abs(f.terms[k] - a[k]) <= TOL * Math.max(1, Math.abs(f.terms[k])), `${label}: ${k} ${f.terms[k]} (fast) vs ${a[k]} (equations)`);
  for (let j = 0; j < B * H; j++) assert.ok(Math.abs(codeValue(f.code, H, Math.floor(j / H), j % H) - a.code[j]) <= TOL, `${label}: code at ${j}`);
  assert.ok(Math.abs(p.get("threshold")[0] - a.theta) < 1e-6, `${label}: θ update, fast ${p.get("threshold")[0]}, equations ${a.theta}`);
  let compared = 0;
  for (const [name, ag] of Object.entries(a.grads)) {
    const h = g.get(name);
    const hmax = Math.max(...Array.from(h, Math.abs));
    assert.ok(hmax > 0, `${label}: the fast gradient of ${name} is zero: the case does not exercise it`);
    for (let i = 0; i < h.length; i++) {
      assert.ok(Math.abs(ag[i] - h[i]) <= TOL * (Math.abs(h[i]) + hmax), `${label}: ${name}[${i}]: fast ${h[i]}, autodiff ${ag[i]}`);
      compared++;
    }
  }
  return { compared, code: a.code };
}

const dead = Uint8Array.from({ length: H }, (_, i) => (i % 3 === 1 || i === 12 ? 1 : 0)); // 5 dead latents
const TRAINABLE = 2 * H * D + H + D;

for (const apply of [true, false]) {
  test(`autodiff parity: matryoshka, apply_b_dec_to_input=${apply}: prefixes [3, 8, 13], ties at the batch's cut, few positives, AuxK on and off, θ's update`, () => {
    const c = config({ matryoshka_prefixes: [3, 8, H], apply_b_dec_to_input: apply });
    const model = createModel(c);
    for (const theta of [0, 0.6]) {
      const p = params(model, apply ? 10 : 20, theta);
      // latents 0 and 1 far above the rest (block 1), and twins 5 and 9 (blocks 2 and 3) just
      // below them: the batch's cut falls between the twins of some row, a tie across blocks
      const We = p.get("W_enc"), be = p.get("b_enc");
      for (const i of [0, 1]) {
        be[i] = 4;
        for (let d = 0; d < D; d++) We[i * D + d] *= 0.05;
      }
      for (let d = 0; d < D; d++) We[9 * D + d] = We[5 * D + d] = 0.02 * We[5 * D + d];
      be[5] = be[9] = 2.5;
      const X = batch(apply ? 11 : 21);
      for (const dm of [dead, null]) {
        const r = check(`θ=${theta} ${dm ? "AuxK" : "no AuxK"}`, c, model, p, X, dm);
        assert.equal(r.compared, TRAINABLE, "every trainable entry compared");
        for (const [lo, hi] of [[0, 3], [3, 8], [8, H]]) assert.ok(Array.from({ length: B }).some((_, b) => r.code.subarray(b * H + lo, b * H + hi).some((v) => v > 0)), `block [${lo}, ${hi}) holds a selected latent`);
        assert.ok(Array.from({ length: B }).some((_, b) => r.code[b * H + 5] > 0 && r.code[b * H + 9] === 0), "a row whose twins the cut splits (the earlier kept)");
      }
    }
    // fewer positive pre-activations than k·B: every positive one is kept
    const p = params(model, 30, 0);
    p.get("b_enc").forEach((_, j, a) => (a[j] -= 2));
    const r = check("few positives", c, model, p, batch(31), dead);
    assert.equal(r.compared, TRAINABLE);
    const kept = r.code.filter((v) => v > 0).length;
    assert.ok(kept > 0 && kept < K * B, `${kept} positives, fewer than k·B = ${K * B}`);
  });
}

test("autodiff parity: matryoshka with one prefix (= d_sae) gives BatchTopK's equations, loss and gradients", () => {
  const c = config({ matryoshka_prefixes: [H] });
  const model = createModel(c);
  const p = params(model, 40, 0);
  const X = batch(41);
  const m = auto(c, model, p, X, dead);
  const b = auto(configFromObject({ data: { d_in: D }, sae: { variant: "batchtopk", d_sae: H, k: K, k_aux: 3, aux_coefficient: 0.5 } }).config, model, p, X, dead);
  assert.equal(m.loss, b.loss);
  for (const name of Object.keys(b.grads)) assert.deepEqual(Array.from(m.grads[name]), Array.from(b.grads[name]), name);
  assert.ok(check("one prefix", c, model, p, X, dead).compared === TRAINABLE);
});
