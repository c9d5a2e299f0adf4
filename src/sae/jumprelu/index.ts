// JumpReLU SAE (Rajamanoharan et al. 2024, arXiv 2407.14435; docs/variants.md#jumprelu): f =
// z·H(z − θ) with θ = e^{log_threshold} learned through straight-through estimators, and an L0
// penalty. The fast CPU path is fast.ts.
import { z } from "zod";
import { defineVariant, f32, foldIntoEncoderBias, plainFromSaeLens, type Dims } from "../variant.ts";
import type { Arr } from "../../engine/types.ts";
import { createJumpRelu } from "./fast.ts";
import { jumpreluEquations } from "./equations.ts";

const keys = {
  /** λ of the L0 penalty */
  l0_coefficient: z.number().min(0).default(0.005),
  /** ε, the bandwidth of the straight-through rectangle kernel */
  jumprelu_bandwidth: z.number().positive().default(0.001),
  /** θ at init */
  jumprelu_init_threshold: z.number().positive().default(0.001),
};

/** SAELens's architecture for a thresholded ReLU (also how BatchTopK's inference SAE is held) */
export const SAELENS_JUMPRELU = "jumprelu";

export const jumprelu = defineVariant(keys, {
  name: "jumprelu",
  equations: jumpreluEquations,
  eqSettings: (s) => ({ bandwidth: s.jumprelu_bandwidth }),
  title: "JumpReLU (Rajamanoharan et al. 2024)",
  // the paper's encoder has no pre-encoder bias
  defaults: { init_norm: 1, apply_b_dec_to_input: false },
  defaultLr: () => 1e-3,
  coefficient: (s) => s.l0_coefficient,
  knob: { key: "l0_coefficient", label: "λ0" },
  specs: (dims, s) => create(dims, s, null).specs,
  init: (p, s) => p.get("log_threshold").fill(Math.log(s.jumprelu_init_threshold)),
  create,
  foldInputBias: foldIntoEncoderBias,
  toSaeLens: (p, { H }) => ({ architecture: SAELENS_JUMPRELU, tensors: { b_enc: f32(p.get("b_enc"), [H]), threshold: f32(Array.from(p.get("log_threshold"), Math.exp), [H]) } }),
  fromSaeLens: (p, need, dims) => {
    plainFromSaeLens(p, need, dims);
    p.get("log_threshold").set(Array.from(need("threshold", [dims.H]), Math.log));
  },
  saeLensImports: [{ architecture: SAELENS_JUMPRELU, settings: () => ({}) }],
});

function create(dims: Dims, s: { jumprelu_bandwidth: number; apply_b_dec_to_input: boolean }, fixedInputBias: Arr | null) {
  return createJumpRelu(dims, { bandwidth: s.jumprelu_bandwidth, unitNormDecoder: true, applyBDecToInput: s.apply_b_dec_to_input, fixedInputBias });
}
