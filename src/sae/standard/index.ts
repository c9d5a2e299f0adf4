// Standard SAE: ReLU encoder, linear decoder, L1 sparsity penalty. Two flavours
// (sae-variants.md §2.1):
//   constrained — Towards Monosemanticity (Bricken et al. 2023), dictionary_learning
//                 StandardTrainer: unit-norm decoder rows, penalty λ·Σ_i f_i;
//   april       — Anthropic's April-2024 update, dictionary_learning StandardTrainerAprilUpdate,
//                 SAELens `standard`: free decoder, penalty λ·Σ_i f_i·‖d_i‖.
// The pipeline (five GEMMs) is in relu.ts; this file picks the penalty and the decoder handling.
import type { Arr } from "../../engine/types.ts";
import type { Dims, SaeModel } from "../variant.ts";
import { createReluSae, l1Penalty } from "../relu.ts";

export interface StandardOptions {
  flavour: "constrained" | "april";
  applyBDecToInput: boolean;
  fixedInputBias?: Arr | null;
  /** test hook: force the dense or the sparse computation */
  path?: "auto" | "dense" | "sparse";
}

export function createStandard(dims: Dims, opt: StandardOptions): SaeModel {
  return createReluSae(dims, { variant: "standard", penalty: l1Penalty, unitNormDecoder: opt.flavour === "constrained", applyBDecToInput: opt.applyBDecToInput, fixedInputBias: opt.fixedInputBias, path: opt.path, scale: false });
}
