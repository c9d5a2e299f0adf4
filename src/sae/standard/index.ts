// Standard SAE: ReLU encoder, linear decoder, L1 sparsity penalty (docs/variants.md#standard).
// Two flavours:
//   constrained — Towards Monosemanticity (Bricken et al. 2023), dictionary_learning
//                 StandardTrainer: unit-norm decoder rows, penalty λ·Σ_i f_i;
//   april       — Anthropic's April-2024 update, dictionary_learning StandardTrainerAprilUpdate,
//                 SAELens `standard`: free decoder, penalty λ·Σ_i f_i·‖d_i‖.
// The pipeline (five GEMMs, or the sparse path) is relu.ts; this file picks the penalty and the
// decoder handling.
import type { Arr } from "../../engine/types.ts";
import type { Dims, SaeModel } from "../variant.ts";
import { defineVariant, foldIntoEncoderBias, plainFromSaeLens, plainToSaeLens } from "../variant.ts";
import { createReluSae, l1Penalty } from "../relu.ts";
import { l1_coefficient } from "../keys.ts";
import { standardEquations } from "./equations.ts";

export interface StandardOptions {
  flavour: "constrained" | "april";
  applyBDecToInput: boolean;
  fixedInputBias?: Arr | null;
  /** test hook: force the dense or the sparse computation */
  path?: "auto" | "dense" | "sparse";
}

export function createStandard(dims: Dims, opt: StandardOptions): SaeModel {
  return createReluSae(dims, "standard", { penalty: l1Penalty, unitNormDecoder: opt.flavour === "constrained", applyBDecToInput: opt.applyBDecToInput, fixedInputBias: opt.fixedInputBias, path: opt.path, scaleParam: null });
}

/** SAELens's architecture for a ReLU SAE with b_enc (also what TanH and Scaled export as) */
export const SAELENS_STANDARD = "standard";

export const standard = defineVariant({ l1_coefficient }, {
  name: "standard",
  equations: standardEquations,
  title: "Standard (ReLU + L1; Bricken et al. 2023, Anthropic Apr 2024)",
  flavours: ["constrained", "april"],
  defaults: { init_norm: 0.1 },
  defaultLr: () => 1e-3,
  coefficient: (s) => s.l1_coefficient,
  knob: { key: "l1_coefficient", label: "λ" },
  specs: (dims, s) => createStandard(dims, { flavour: s.flavour as StandardOptions["flavour"], applyBDecToInput: s.apply_b_dec_to_input }).specs,
  create: (dims, s, fixedInputBias) => createStandard(dims, { flavour: s.flavour as StandardOptions["flavour"], applyBDecToInput: s.apply_b_dec_to_input, fixedInputBias }),
  foldInputBias: foldIntoEncoderBias,
  toSaeLens: plainToSaeLens(SAELENS_STANDARD),
  fromSaeLens: plainFromSaeLens,
  // a SAELens standard SAE has a free decoder: an imported decoder need not be unit-norm
  saeLensImports: [{ architecture: SAELENS_STANDARD, settings: () => ({ flavour: "april" }) }],
});
