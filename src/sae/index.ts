// The variant registry: one entry per file in this folder. Adding a variant = one file + one row.
import type { Config } from "../config/schema.ts";
import type { SaeModel } from "./variant.ts";
import { createStandard } from "./standard.ts";
import { createTopK } from "./topk.ts";

export interface VariantInfo {
  summary: string;
  paper: string;
  create(c: Config): SaeModel;
}

export const REGISTRY: Record<Config["sae"]["variant"], VariantInfo> = {
  standard: {
    summary: "ReLU + L1; `flavour: constrained` (unit-norm decoder) or `april` (decoder-norm-weighted L1, free decoder)",
    paper: "Bricken et al. 2023; Anthropic April 2024 update",
    create: (c) => createStandard({ D: c.data.d_in, H: c.sae.d_sae }, { flavour: c.sae.flavour, applyBDecToInput: c.sae.apply_b_dec_to_input }),
  },
  topk: {
    summary: "keep the k largest pre-activations per token; AuxK on dead latents",
    paper: "Gao et al. 2024 (arXiv 2406.04093)",
    create: (c) =>
      createTopK({ D: c.data.d_in, H: c.sae.d_sae }, { k: c.sae.k, kAux: c.sae.k_aux, auxCoefficient: c.sae.aux_coefficient, applyBDecToInput: c.sae.apply_b_dec_to_input }),
  },
};

export function createModel(c: Config): SaeModel {
  return REGISTRY[c.sae.variant].create(c);
}
