// One optimisation step, shared by the training loop and the tests:
// forward → backward → clip → unit-norm projection → Adam (frozen parameters skipped) → renormalise
// (the last three fused per decoder row: Engine.adamUnitRows).
import type { Arr, Engine } from "../engine/types.ts";
import type { ParamSet } from "../sae/params.ts";
import type { ForwardResult, SaeModel } from "../sae/variant.ts";

export interface OptimState {
  p: ParamSet;
  m: ParamSet;
  v: ParamSet;
  /** Adam's step counter t (bias corrections use β^t) */
  adamT: number;
}

export interface StepSettings {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** global gradient-norm clip; 0 = off */
  gradClip: number;
  /** the sparsity coefficient at this step */
  coeff: number;
  dead: Uint8Array | null;
  /** parameter names that must not change */
  frozen?: ReadonlySet<string>;
}

export function optimizerStep(e: Engine, model: SaeModel, s: OptimState, grads: ParamSet, X: Arr, B: number, o: StepSettings): { fwd: ForwardResult; gradNorm: number } {
  const { D, H } = model.dims;
  const written = model.writesGradients ?? [];
  if (written.length === 0) e.zero(grads.buf);
  else for (const { name } of grads.specs) if (!written.includes(name)) e.zero(grads.get(name));
  const inp = { e, p: s.p, X, B, coeff: o.coeff, dead: o.dead, training: true };
  const fwd = model.forward(inp);
  const squares = model.backward(inp, fwd.state, grads);
  const frozen = new Set([...(o.frozen ?? []), ...(model.nonTrainable ?? [])]);
  for (const name of frozen) e.zero(grads.get(name));
  // the backward's own Σ g² holds while no gradient it wrote was zeroed after it (it leaves those
  // of non-trainable parameters at 0)
  const gradNorm = Math.sqrt(typeof squares === "number" && (o.frozen?.size ?? 0) === 0 ? squares : e.sumSquares(grads.buf));
  // clipping scales the whole gradient; Adam applies the factor as it reads it (projection is linear)
  const clip = o.gradClip > 0 && gradNorm > o.gradClip ? o.gradClip / gradNorm : 1;
  // a unit-norm decoder takes the projection, its Adam step and the renormalisation in one pass
  const constrain = model.unitNormDecoder && !frozen.has("W_dec");
  s.adamT++;
  const bc1 = 1 - o.beta1 ** s.adamT, bc2 = 1 - o.beta2 ** s.adamT;
  if (frozen.size === 0 && !constrain) {
    e.adam(s.p.buf, grads.buf, s.m.buf, s.v.buf, o.lr, o.beta1, o.beta2, o.eps, bc1, bc2, clip);
  } else {
    for (const { name } of s.p.specs) {
      if (frozen.has(name)) continue;
      const args = [s.p.get(name), grads.get(name), s.m.get(name), s.v.get(name)] as const;
      if (constrain && name === "W_dec") e.adamUnitRows(...args, H, D, o.lr, o.beta1, o.beta2, o.eps, bc1, bc2, clip);
      else e.adam(...args, o.lr, o.beta1, o.beta2, o.eps, bc1, bc2, clip);
    }
  }
  return { fwd, gradNorm };
}
