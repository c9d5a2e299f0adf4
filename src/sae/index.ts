// The variant registry: one entry per file in this folder. Adding a variant = one file + one row.
import type { Config } from "../config/schema.ts";
import type { Arr } from "../engine/types.ts";
import type { SaeModel } from "./variant.ts";
import { createStandard } from "./standard/index.ts";
import { createTanh } from "./tanh/index.ts";
import { createScaled } from "./scaled/index.ts";
import { createGated } from "./gated/fast.ts";
import { createTopK } from "./topk/fast.ts";
import { createBatchTopK } from "./batchtopk/fast.ts";
import { createJumpRelu } from "./jumprelu/fast.ts";

export interface VariantInfo {
  /** the sparsity coefficient this variant reads from the config, if it has a penalty */
  coefficient(c: Config): number;
  create(c: Config, fixedInputBias: Arr | null): SaeModel;
}

const dims = (c: Config) => ({ D: c.data.d_in, H: c.sae.d_sae });
const l1 = (c: Config) => c.sae.l1_coefficient;
const none = () => 0;
const constrained = (c: Config) => c.sae.flavour === "constrained";

export const REGISTRY: Record<Config["sae"]["variant"], VariantInfo> = {
  standard: { coefficient: l1, create: (c, f) => createStandard(dims(c), { flavour: constrained(c) ? "constrained" : "april", applyBDecToInput: c.sae.apply_b_dec_to_input, fixedInputBias: f }) },
  tanh: { coefficient: l1, create: (c, f) => createTanh(dims(c), { tanhScale: c.sae.tanh_scale, flavour: constrained(c) ? "constrained" : "april", applyBDecToInput: c.sae.apply_b_dec_to_input, fixedInputBias: f }) },
  scaled: { coefficient: l1, create: (c, f) => createScaled(dims(c), { applyBDecToInput: c.sae.apply_b_dec_to_input, fixedInputBias: f }) },
  gated: { coefficient: l1, create: (c, f) => createGated(dims(c), { flavour: c.sae.flavour === "saelens" ? "saelens" : "paper", applyBDecToInput: c.sae.apply_b_dec_to_input, fixedInputBias: f }) },
  topk: { coefficient: none, create: (c, f) => createTopK(dims(c), { k: c.sae.k, kAux: c.sae.k_aux, auxCoefficient: c.sae.aux_coefficient, applyBDecToInput: c.sae.apply_b_dec_to_input, fixedInputBias: f }) },
  batchtopk: { coefficient: none, create: (c, f) => createBatchTopK(dims(c), { k: c.sae.k, kAux: c.sae.k_aux, auxCoefficient: c.sae.aux_coefficient, applyBDecToInput: c.sae.apply_b_dec_to_input, fixedInputBias: f }) },
  jumprelu: {
    coefficient: (c) => c.sae.l0_coefficient,
    create: (c, f) => createJumpRelu(dims(c), { bandwidth: c.sae.jumprelu_bandwidth, unitNormDecoder: true, applyBDecToInput: c.sae.apply_b_dec_to_input, fixedInputBias: f }),
  },
};

/** fixedInputBias: see SaeModel.fixedInputBias */
export function createModel(c: Config, fixedInputBias: Arr | null = null): SaeModel {
  return REGISTRY[c.sae.variant].create(c, fixedInputBias);
}
