// BatchTopK SAE (Bussmann, Leask & Nanda 2024, arXiv 2412.06410; docs/variants.md#batchtopk):
// the k·B largest pre-activations of the batch in training, one global threshold θ (a running
// statistic, non-trainable) at inference. The fast CPU path is fast.ts. SAELens holds the
// inference SAE as a JumpReLU with θ in every entry.
import { resolvedKAux } from "../keys.ts";
import { defineVariant, f32, plainFromSaeLens, type Dims, type SaeLensImport } from "../variant.ts";
import type { ParamSet } from "../params.ts";
import type { Arr } from "../../engine/types.ts";
import { foldDecoderNorms, kSparse, topkKeys } from "../topk/index.ts";
import { SAELENS_JUMPRELU } from "../jumprelu/index.ts";
import { SaeError } from "../../errors.ts";
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
  saeLensImports: [saeLensBatchTopKTraining("batchtopk", () => ({}))],
});

/**
 * A folder that SAELens's save_model writes for a BatchTopK-family training SAE (its checkpoints):
 * W_enc, b_enc, W_dec, b_dec and the running threshold as the float64 scalar topk_threshold; k in
 * cfg.json (a float there). With rescale_acts_by_decoder_norm (its default) the selection and θ
 * act on the pre-activations times ‖d_i‖ and the decoder is used with unit rows, which is this
 * tool's SAE once the norms are folded into the encoder (foldDecoderNorms); θ is unchanged by the
 * fold. `more` adds the variant's own settings.
 */
export function saeLensBatchTopKTraining(architecture: string, more: (cfg: Record<string, any>) => Record<string, unknown>): SaeLensImport {
  return {
    architecture,
    settings: (cfg) => {
      if (cfg.k !== undefined && !(Number.isInteger(cfg.k) && cfg.k >= 1))
        throw new SaeError("data", `cfg.json: k = ${JSON.stringify(cfg.k)}; this tool's BatchTopK keeps k·B entries per batch with k a whole number ≥ 1`, "edit k in cfg.json to the nearest whole number (the threshold, which inference uses, is unaffected)");
      return { ...(cfg.k !== undefined ? { k: cfg.k } : {}), ...more(cfg) };
    },
    adapt: (t, cfg, D, H) => {
      const folded = cfg.rescale_acts_by_decoder_norm && t.W_enc && t.W_dec && t.b_enc ? foldDecoderNorms(t, D, H) : t;
      const theta = t.topk_threshold;
      return theta && theta.data.length === 1 ? { ...folded, threshold: f32(new Float32Array(H).fill(theta.data[0]), [H]) } : folded;
    },
  };
}

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
