// Scaled-ReLU SAE for two-phase training against feature suppression (Wright & Sharkey, "Addressing
// Feature Suppression in SAEs", Feb 2024; sae-variants.md §2.3): f = s ⊙ ReLU(W_enc x + b_enc)
// with a per-latent scale s (init 1) and a unit-norm decoder. The L1 acts on the unscaled code,
// so s must stay frozen (at 1) while the penalty is on: training both would let W_enc shrink and
// s grow, zeroing the penalty at unchanged reconstruction. The trainer enforces this. Phase 2
// fine-tunes without the penalty and with parts frozen (`sae finetune --mode scale|
// unrotated_decoder|decoder|encoder`).
import type { Arr } from "../../engine/types.ts";
import type { Dims, SaeModel } from "../variant.ts";
import { createReluSae, l1Penalty } from "../relu.ts";

export interface ScaledOptions {
  applyBDecToInput: boolean;
  fixedInputBias?: Arr | null;
  /** test hook: force the dense or the sparse computation */
  path?: "auto" | "dense" | "sparse";
}

export function createScaled(dims: Dims, opt: ScaledOptions): SaeModel {
  return createReluSae(dims, { variant: "scaled", penalty: l1Penalty, unitNormDecoder: true, applyBDecToInput: opt.applyBDecToInput, fixedInputBias: opt.fixedInputBias, path: opt.path, scale: true });
}
