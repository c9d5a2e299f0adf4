// Scaled-ReLU SAE for two-phase training against feature suppression (Wright & Sharkey, "Addressing
// Feature Suppression in SAEs", Feb 2024; docs/variants.md#scaled): f = s ⊙ ReLU(W_enc x + b_enc)
// with a per-latent scale s (init 1) and a unit-norm decoder. The L1 acts on the unscaled code,
// so s must stay frozen (at 1) while the penalty is on: training both would let W_enc shrink and
// s grow, zeroing the penalty at unchanged reconstruction. The trainer enforces this. Phase 2
// fine-tunes without the penalty and with parts frozen (`sae finetune --mode scale|
// unrotated_decoder|decoder|encoder`).
import type { Arr } from "../../engine/types.ts";
import type { Dims, SaeModel } from "../variant.ts";
import { defineVariant, f32, foldIntoEncoderBias, plainFromSaeLens } from "../variant.ts";
import type { ParamSet } from "../params.ts";
import { createReluSae, l1Penalty } from "../relu.ts";
import { l1_coefficient } from "../keys.ts";
import { scaledEquations } from "./equations.ts";
import { SAELENS_STANDARD } from "../standard/index.ts";

export interface ScaledOptions {
  applyBDecToInput: boolean;
  fixedInputBias?: Arr | null;
  /** test hook: force the dense or the sparse computation */
  path?: "auto" | "dense" | "sparse";
}

export function createScaled(dims: Dims, opt: ScaledOptions): SaeModel {
  return createReluSae(dims, "scaled", { penalty: l1Penalty, unitNormDecoder: true, applyBDecToInput: opt.applyBDecToInput, fixedInputBias: opt.fixedInputBias, path: opt.path, scaleParam: "s" }, [{ name: "s", shape: [dims.H], groups: ["scale"] }]);
}

/** What each fine-tuning mode of the feature-suppression study trains (SAELens's finetuning_method). */
const MODES = {
  scale: ["s"],
  unrotated_decoder: ["s", "b_dec"],
  decoder: ["s", "W_dec", "b_dec"],
  // and `encoder` (the negative control: the decoder frozen), which every variant has (freeze.ts)
};

export const scaled = defineVariant({ l1_coefficient }, {
  name: "scaled",
  equations: scaledEquations,
  title: "Scaled ReLU + penalty-free phase 2 (Wright & Sharkey, Feb 2024)",
  defaults: { init_norm: 0.1 },
  defaultLr: () => 1e-3,
  coefficient: (s) => s.l1_coefficient,
  knob: { key: "l1_coefficient", label: "λ" },
  specs: (dims, s) => createScaled(dims, { applyBDecToInput: s.apply_b_dec_to_input }).specs,
  init: (p) => p.get("s").fill(1),
  create: (dims, s, fixedInputBias) => createScaled(dims, { applyBDecToInput: s.apply_b_dec_to_input, fixedInputBias }),
  modes: MODES,
  frozenUnderPenalty: ["s"],
  foldInputBias: foldIntoEncoderBias,
  // SAELens has no scale: s goes into the decoder rows (the same SAE function, a free decoder)
  toSaeLens: (p, { D, H }) => {
    const W = f32(p.get("W_dec"), [H, D]), sv = p.get("s");
    for (let i = 0; i < H; i++) for (let d = 0; d < D; d++) W.data[i * D + d] *= sv[i];
    return { architecture: SAELENS_STANDARD, tensors: { b_enc: f32(p.get("b_enc"), [H]), W_dec: W } };
  },
  fromSaeLens: (p, need, dims) => {
    plainFromSaeLens(p, need, dims);
    p.get("s").fill(1); // folded into W_dec
  },
  // a standard SAE becomes a scaled one exactly: s_i = ‖d_i‖, d_i ← d_i/‖d_i‖
  convertFrom: { standard: fromUnscaled },
});

function fromUnscaled(from: ParamSet, to: ParamSet, { D, H }: Dims): void {
  for (const name of ["W_enc", "b_enc", "W_dec", "b_dec"]) to.get(name).set(from.get(name));
  const W = to.get("W_dec"), sv = to.get("s");
  for (let i = 0; i < H; i++) {
    let n = 0;
    for (let d = 0; d < D; d++) n += W[i * D + d] ** 2;
    n = Math.sqrt(n);
    sv[i] = n;
    if (n > 0) for (let d = 0; d < D; d++) W[i * D + d] /= n;
  }
}
