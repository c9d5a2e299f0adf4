// Which parameters a phase leaves untouched: its `freeze` groups or the complement of what its
// `mode` trains, the model's non-trainable statistics, and — for the Scaled SAE — s whenever the
// penalty is on (sae-variants.md §2.3: training s under an L1 on the unscaled code collapses it).
import type { Phase } from "../config/schema.ts";
import type { SaeModel } from "../sae/variant.ts";
import type { ParamSet } from "../sae/params.ts";
import type { Engine } from "../engine/types.ts";

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
 * pre-activation (and L0) as b_dec moves. Fold it into the encoder biases once instead, so the
 * code stays exactly as it was: (x − b_dec)Wᵀ + b = xWᵀ + (b − W b_dec). Returns whether the
 * model must now be built with apply_b_dec_to_input = false.
 */
export function needsDecoupling(model: SaeModel, frozen: Set<string>): boolean {
  return model.applyBDecToInput && frozen.has("W_enc") && !frozen.has("b_dec");
}

export function decoupleInputBias(e: Engine, model: SaeModel, p: ParamSet): void {
  const { D, H } = model.dims;
  const shift = new Float32Array(H); // W_enc b_dec  [H]
  e.gemm(false, false, H, 1, D, 1, p.get("W_enc"), p.get("b_dec"), 0, shift);
  const v = p.views;
  if (v.b_enc) for (let i = 0; i < H; i++) v.b_enc[i] -= shift[i];
  if (v.b_gate) {
    // Gated: π_gate = Z + b_gate, π_mag = Z e^{r_mag} + b_mag, both shift with Z
    for (let i = 0; i < H; i++) {
      v.b_gate[i] -= shift[i];
      v.b_mag[i] -= Math.exp(v.r_mag[i]) * shift[i];
    }
  }
}
