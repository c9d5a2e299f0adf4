// TopK SAE (Gao et al. 2024, arXiv 2406.04093; docs/variants.md#topk) with the AuxK loss for dead
// latents. The fast CPU path (blocked encoder GEMM + top-k, gathered decode, sparse gradients) is
// fast.ts. Exported to SAELens as `topk` (with k) and to sparsify.
import { aux_coefficient, k, k_aux, kSparseLr, resolvedKAux } from "../keys.ts";
import { defineVariant, f32, foldIntoEncoderBias, plainFromSaeLens, plainToSaeLens, type SaeLensImport } from "../variant.ts";
import { createTopK } from "./fast.ts";
import type { Tensor } from "../../io/safetensors.ts";
import { topkEquations } from "./equations.ts";

export const topkKeys = { k, k_aux, aux_coefficient };

/** checks shared by the k-sparse variants */
export function checkK(s: { k: number; k_aux?: number; d_sae: number }, fail: (key: string, msg: string, hint: string) => never): void {
  if (s.k > s.d_sae) fail("k", `k = ${s.k} exceeds the number of latents d_sae = ${s.d_sae}`, "lower sae.k or raise sae.d_sae / sae.expansion_factor");
  if (s.k_aux !== undefined && s.k_aux > s.d_sae) fail("k_aux", `k_aux = ${s.k_aux} exceeds d_sae = ${s.d_sae}`, "lower sae.k_aux");
}

/**
 * SAELens's TopK with rescale_acts_by_decoder_norm (its default): the top-k runs on the
 * pre-activations times ‖d_i‖ and the decoder is used with unit rows. Multiplying row i of W_enc
 * and b_enc_i by ‖d_i‖ and dividing d_i by it gives the same SAE without the rescale (‖d_i‖ > 0).
 * W_enc [D, H], W_dec [H, D].
 */
export function foldDecoderNorms(t: Record<string, Tensor>, D: number, H: number): Record<string, Tensor> {
  const We = Float32Array.from(t.W_enc.data), Wd = Float32Array.from(t.W_dec.data), be = Float32Array.from(t.b_enc.data);
  for (let i = 0; i < H; i++) {
    let n = 0;
    for (let d = 0; d < D; d++) n += Wd[i * D + d] ** 2;
    n = Math.sqrt(n);
    if (!(n > 0)) continue;
    for (let d = 0; d < D; d++) {
      We[d * H + i] *= n;
      Wd[i * D + d] /= n;
    }
    be[i] *= n;
  }
  return { ...t, W_enc: f32(We, t.W_enc.shape), W_dec: f32(Wd, t.W_dec.shape), b_enc: f32(be, t.b_enc.shape) };
}

const saeLensTopK: SaeLensImport = {
  architecture: "topk",
  settings: (cfg) => ({ k: cfg.k }),
  adapt: (t, cfg, D, H) => (cfg.rescale_acts_by_decoder_norm && t.W_enc && t.W_dec && t.b_enc ? foldDecoderNorms(t, D, H) : t),
};

/** What the variants made sparse by k (and trained with AuxK) share: no penalty, k as the knob, the lr rule, checks. */
export const kSparse = {
  defaults: { init_norm: 1 },
  defaultLr: kSparseLr,
  coefficient: () => 0,
  knob: { key: "k", label: "k" } as const,
  resolve: (s: { k_aux?: number; d_sae: number }, D: number) => ({ k_aux: resolvedKAux(s, D) }),
  check: checkK,
  foldInputBias: foldIntoEncoderBias,
  /** the resolved config holds k_aux (resolve) */
  eqSettings: (s: { k: number; k_aux?: number; aux_coefficient: number }) => ({ k: s.k, kAux: s.k_aux ?? 0, auxCoefficient: s.aux_coefficient }),
};

export const topk = defineVariant(topkKeys, {
  ...kSparse,
  name: "topk",
  equations: topkEquations,
  title: "TopK + AuxK (Gao et al. 2024)",
  specs: (dims, s) => create(dims, s, null).specs,
  create,
  toSaeLens: (p, dims, s) => ({ ...plainToSaeLens("topk")(p, dims), cfg: { k: s.k, rescale_acts_by_decoder_norm: false } }),
  fromSaeLens: plainFromSaeLens,
  saeLensImports: [saeLensTopK],
  sparsify: {
    activation: "topk",
    isDefault: true,
    cfg: (s, D, H) => ({ activation: "topk", expansion_factor: H / D, normalize_decoder: false, num_latents: H, k: s.k, multi_topk: false, skip_connection: false, transcode: false, d_in: D }),
    settings: (cfg) => ({ k: cfg.k }),
  },
});

function create(dims: { D: number; H: number }, s: { k: number; k_aux?: number; d_sae: number; aux_coefficient: number; apply_b_dec_to_input: boolean }, fixedInputBias: Float32Array | Float64Array | null) {
  return createTopK(dims, { k: s.k, kAux: resolvedKAux(s, dims.D), auxCoefficient: s.aux_coefficient, applyBDecToInput: s.apply_b_dec_to_input, fixedInputBias });
}
