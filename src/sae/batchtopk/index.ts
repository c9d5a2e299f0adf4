// BatchTopK SAE (Bussmann, Leask & Nanda 2024, arXiv 2412.06410; docs/variants.md#batchtopk):
// the k·B largest pre-activations of the batch in training, one global threshold θ (a running
// statistic, non-trainable) at inference. The fast CPU path is fast.ts. SAELens holds the
// inference SAE as a JumpReLU with θ in every entry.
import { resolvedKAux } from "../keys.ts";
import { defineVariant, f32, plainFromSaeLens, type Dims } from "../variant.ts";
import type { ParamSet } from "../params.ts";
import type { Arr } from "../../engine/types.ts";
import { kSparse, topkKeys } from "../topk/index.ts";
import { SAELENS_JUMPRELU } from "../jumprelu/index.ts";
import { createBatchTopK } from "./fast.ts";
import { batchtopkEquations } from "./equations.ts";

export const batchtopk = defineVariant(topkKeys, {
  ...kSparse,
  name: "batchtopk",
  equations: batchtopkEquations,
  title: "BatchTopK (Bussmann et al. 2024)",
  specs: (dims, s) => create(dims, s, null).specs,
  create,
  toSaeLens: globalThresholdToSaeLens,
  fromSaeLens: globalThresholdFromSaeLens,
  saeLensImports: [
    // SAELens's BatchTopK training SAE: its running threshold is the scalar topk_threshold
    { architecture: "batchtopk", settings: (cfg) => ({ k: cfg.k }), adapt: (t, _cfg, _D, H) => (t.topk_threshold ? { ...t, threshold: f32(new Float32Array(H).fill(t.topk_threshold.data[0]), [H]) } : t) },
  ],
});

/** the inference SAE as SAELens holds it: a JumpReLU with the global θ in every entry */
export function globalThresholdToSaeLens(p: ParamSet, { H }: Dims) {
  return { architecture: SAELENS_JUMPRELU, tensors: { b_enc: f32(p.get("b_enc"), [H]), threshold: f32(new Float32Array(H).fill(p.get("threshold")[0]), [H]) } };
}
export function globalThresholdFromSaeLens(p: ParamSet, need: (name: string, shape: number[]) => Arr, dims: Dims): void {
  plainFromSaeLens(p, need, dims);
  p.get("threshold")[0] = need("threshold", [dims.H])[0];
}

function create(dims: Dims, s: { k: number; k_aux?: number; d_sae: number; aux_coefficient: number; apply_b_dec_to_input: boolean }, fixedInputBias: Arr | null) {
  return createBatchTopK(dims, { k: s.k, kAux: resolvedKAux(s, dims.D), auxCoefficient: s.aux_coefficient, applyBDecToInput: s.apply_b_dec_to_input, fixedInputBias });
}
