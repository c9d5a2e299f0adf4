// Which parameters a phase leaves untouched (docs/training.md#freezing): its `freeze` list (parameter
// names, or groups of them: every ParamSpec names its groups) or the complement of what its `mode`
// trains, the model's non-trainable statistics, and what the variant keeps frozen while the
// penalty is on (Scaled: s, since training it under an L1 on the unscaled code collapses it).
import type { Phase } from "../config/schema.ts";
import type { SaeModel } from "../sae/variant.ts";
import type { ParamSet } from "../sae/params.ts";
import type { Engine } from "../engine/types.ts";
import { variantDef } from "../sae/index.ts";
import { expandFreeze, modeTrains } from "../sae/freeze.ts";

export function frozenParams(model: SaeModel, phase: Phase, coeff: number): Set<string> {
  const def = variantDef(model.variant);
  const names = new Set(model.specs.map((s) => s.name));
  const frozen = new Set<string>();
  if (phase.mode) {
    const trains = new Set(modeTrains(def, model.specs, phase.mode) ?? []);
    for (const n of names) if (!trains.has(n)) frozen.add(n);
  }
  for (const entry of phase.freeze) for (const n of expandFreeze(model.specs, entry)) frozen.add(n);
  for (const n of model.nonTrainable ?? []) frozen.add(n);
  if (coeff > 0) for (const n of def.frozenUnderPenalty ?? []) frozen.add(n);
  return frozen;
}

/**
 * When b_dec trains while the encoder is frozen, a pre-encoder bias would move every
 * pre-activation (and L0) as b_dec moves: the encoder then subtracts b_dec's current value as a
 * constant instead (SaeModel.fixedInputBias), so the code stays bit-for-bit what it was.
 */
export function needsFixedInputBias(model: SaeModel, frozen: Set<string>): boolean {
  return model.applyBDecToInput && !model.fixedInputBias && frozen.has("W_enc") && !frozen.has("b_dec");
}

/**
 * Folds a constant input bias b into the encoder biases, for export without it:
 * (x − b)Wᵀ + β = xWᵀ + (β − W b), each variant moving its own biases.
 */
export function foldInputBias(e: Engine, model: SaeModel, p: ParamSet, bias: ArrayLike<number>): void {
  const { D, H } = model.dims;
  const shift = p.buf instanceof Float64Array ? new Float64Array(H) : new Float32Array(H); // W_enc b  [H]
  const b = p.buf instanceof Float64Array ? Float64Array.from(bias) : Float32Array.from(bias);
  e.gemm(false, false, H, 1, D, 1, p.get("W_enc"), b, 0, shift);
  variantDef(model.variant).foldInputBias(p, shift);
}
