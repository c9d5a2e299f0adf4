// Which parameters a phase leaves untouched: its `freeze` groups or the complement of what its
// `mode` trains, the model's non-trainable statistics, and — for the Scaled SAE — s whenever the
// penalty is on (sae-variants.md §2.3: training s under an L1 on the unscaled code collapses it).
import type { Phase } from "../config/schema.ts";
import type { SaeModel } from "../sae/variant.ts";
import type { ParamSet } from "../sae/params.ts";
import type { Arr, Engine } from "../engine/types.ts";

const ENCODER = ["W_enc", "b_enc", "b_gate", "b_mag", "r_mag", "log_threshold"];
const GROUPS: Record<string, string[]> = {
  encoder: ENCODER,
  decoder: ["W_dec", "b_dec"],
  scale: ["s"],
  threshold: ["log_threshold"],
};
const MODE_TRAINS: Record<NonNullable<Phase["mode"]>, string[]> = {
  scale: ["s"],
  unrotated_decoder: ["s", "b_dec"],
  decoder: ["s", "W_dec", "b_dec"],
  encoder: [...ENCODER, "s"],
};

export function frozenParams(model: SaeModel, phase: Phase, coeff: number): Set<string> {
  const names = new Set(model.specs.map((s) => s.name));
  const frozen = new Set<string>();
  if (phase.mode) {
    const trains = new Set(MODE_TRAINS[phase.mode]);
    for (const n of names) if (!trains.has(n)) frozen.add(n);
  }
  for (const g of phase.freeze) for (const n of GROUPS[g] ?? [g]) if (names.has(n)) frozen.add(n);
  for (const n of model.nonTrainable ?? []) frozen.add(n);
  if (model.variant === "scaled" && coeff > 0) frozen.add("s");
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
 * (x − b)Wᵀ + b_enc = xWᵀ + (b_enc − W b). Gated: both π_gate and π_mag shift with Z.
 */
export function foldInputBias(e: Engine, model: SaeModel, p: ParamSet, bias: Arr): void {
  const { D, H } = model.dims;
  const shift = p.buf instanceof Float64Array ? new Float64Array(H) : new Float32Array(H); // W_enc b  [H]
  e.gemm(false, false, H, 1, D, 1, p.get("W_enc"), bias, 0, shift);
  const v = p.views;
  if (v.b_enc) for (let i = 0; i < H; i++) v.b_enc[i] -= shift[i];
  if (v.b_gate) {
    for (let i = 0; i < H; i++) {
      v.b_gate[i] -= shift[i];
      v.b_mag[i] -= Math.exp(v.r_mag[i]) * shift[i];
    }
  }
}
