// Float64 finite-difference gradient checks of every variant over every parameter (tiny shapes).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createStandard } from "../src/sae/standard.ts";
import { createTopK } from "../src/sae/topk.ts";
import { jsEngine } from "../src/engine/js.ts";
import { Rng } from "../src/train/rng.ts";
import { gradCheck, randn, randomParams } from "./helpers.ts";

const D = 5, H = 9, B = 4;
// relative error floor: central differences at h = 1e-6 on an O(1) float64 loss carry ~1e-9 of noise
const TOL = 1e-5;

for (const flavour of ["constrained", "april"] as const) {
  for (const applyBDecToInput of [true, false]) {
    test(`standard (${flavour}, apply_b_dec_to_input=${applyBDecToInput}): analytic gradients match finite differences`, () => {
      const model = createStandard({ D, H }, { flavour, applyBDecToInput });
      const p = randomParams(model, 1);
      const X = randn(B * D, new Rng(2));
      const r = gradCheck(model, p, { X, B, coeff: 0.3, dead: null });
      assert.equal(r.checked, 2 * H * D + H + D);
      assert.ok(r.worst < TOL, `worst relative error ${r.worst} at ${r.where}`);
    });
  }
}

test("standard: the penalty term is λ·Σf (constrained) and λ·Σf‖d‖ (april)", () => {
  for (const flavour of ["constrained", "april"] as const) {
    const model = createStandard({ D, H }, { flavour, applyBDecToInput: true });
    const p = randomParams(model, 3);
    const X = randn(B * D, new Rng(4));
    const r0 = model.forward({ e: jsEngine, p, X, B, coeff: 0, dead: null });
    const r1 = model.forward({ e: jsEngine, p, X, B, coeff: 0.5, dead: null });
    assert.equal(r0.terms.sparsity, 0);
    const F = r1.code.kind === "dense" ? r1.code.F : new Float64Array();
    const W = p.get("W_dec");
    let expect = 0;
    for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) {
      let n = 0;
      for (let d = 0; d < D; d++) n += W[i * D + d] ** 2;
      expect += F[b * H + i] * (flavour === "april" ? Math.sqrt(n) : 1);
    }
    assert.ok(Math.abs(r1.terms.sparsity - (0.5 * expect) / B) < 1e-12);
    assert.ok(Math.abs(r1.terms.loss - r1.terms.mse - r1.terms.sparsity) < 1e-12);
  }
});

for (const applyBDecToInput of [true, false]) {
  test(`topk (apply_b_dec_to_input=${applyBDecToInput}): gradients match finite differences, AuxK off`, () => {
    const model = createTopK({ D, H }, { k: 3, kAux: 2, auxCoefficient: 1 / 32, applyBDecToInput });
    const p = randomParams(model, 5);
    const X = randn(B * D, new Rng(6));
    const r = gradCheck(model, p, { X, B, coeff: 0, dead: null });
    assert.ok(r.worst < TOL, `worst relative error ${r.worst} at ${r.where}`);
  });

  test(`topk (apply_b_dec_to_input=${applyBDecToInput}): gradients match finite differences with AuxK on dead latents`, () => {
    const model = createTopK({ D, H }, { k: 3, kAux: 2, auxCoefficient: 0.5, applyBDecToInput });
    const p = randomParams(model, 7);
    const X = randn(B * D, new Rng(8));
    const dead = new Uint8Array(H);
    dead[1] = dead[4] = dead[6] = dead[8] = 1;
    // AuxK's target is sg(x − x̂): hold it at its value at the base point while differencing.
    const base = model.forward({ e: jsEngine, p, X, B, coeff: 0, dead });
    const auxTarget = base.Xhat.map((v, i) => X[i] - v);
    assert.ok(base.terms.aux > 0, "AuxK should be active in this test");
    const r = gradCheck(model, p, { X, B, coeff: 0, dead, auxTarget });
    assert.ok(r.worst < TOL, `worst relative error ${r.worst} at ${r.where}`);
  });
}

test("topk: AuxK gradients reach only dead latents' encoder and decoder rows", () => {
  const model = createTopK({ D, H }, { k: 2, kAux: 2, auxCoefficient: 1, applyBDecToInput: false });
  const p = randomParams(model, 9);
  const X = randn(B * D, new Rng(10));
  const dead = new Uint8Array(H);
  dead[0] = dead[3] = 1;
  const withAux = p.like(), without = p.like();
  const inp = { e: jsEngine, p, X, B, coeff: 0, dead };
  model.forward(inp);
  model.backward(inp, withAux);
  model.forward({ ...inp, dead: null });
  model.backward({ ...inp, dead: null }, without);
  for (let i = 0; i < H; i++) {
    const changed = [0, 1, 2, 3, 4].some((d) => withAux.get("W_dec")[i * D + d] !== without.get("W_dec")[i * D + d]);
    if (!dead[i]) assert.equal(changed, false, `alive latent ${i} got AuxK gradient`);
  }
  assert.ok([0, 3].some((i) => withAux.get("W_enc")[i * D] !== without.get("W_enc")[i * D]), "dead latents got no AuxK gradient");
});
