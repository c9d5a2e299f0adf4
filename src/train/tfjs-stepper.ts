// The tfjs training step (docs/tfjs.md): a variant's equations under tfjs autodiff, with the
// optimiser of src/train/step.ts written as tensor operations. Parameters, Adam's moments, the
// tokens-since-fired counters and the logging window's sums live on the device for the whole run;
// per step only the batch goes host → device, and device → host only in flush() and save().
import type { Config } from "../config/schema.ts";
import type { EqContext, Equations } from "../sae/ops.ts";
import { standardEquations } from "../sae/standard/equations.ts";
import { tanhEquations } from "../sae/tanh/equations.ts";
import { scaledEquations } from "../sae/scaled/equations.ts";
import { gatedEquations } from "../sae/gated/equations.ts";
import { topkEquations } from "../sae/topk/equations.ts";
import { batchtopkEquations } from "../sae/batchtopk/equations.ts";
import { jumpreluEquations } from "../sae/jumprelu/equations.ts";

/** each variant's equations (the lead moves these into the variants' definitions) */
export const EQUATIONS: Record<Config["sae"]["variant"], Equations> = {
  standard: standardEquations,
  tanh: tanhEquations,
  scaled: scaledEquations,
  gated: gatedEquations,
  topk: topkEquations,
  batchtopk: batchtopkEquations,
  jumprelu: jumpreluEquations,
};

/** The equations' context from a config and the step's own values. */
export function eqContext<T>(c: Config, step: { coeff: number; dead: T | null; training: boolean; fixedInputBias: T | null }): EqContext<T> {
  const s = c.sae;
  return {
    ...step,
    applyBDecToInput: s.apply_b_dec_to_input,
    flavour: s.flavour,
    k: s.k,
    kAux: s.k_aux,
    auxCoefficient: s.aux_coefficient,
    tanhScale: s.tanh_scale,
    bandwidth: s.jumprelu_bandwidth,
  };
}
