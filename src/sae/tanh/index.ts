// TanH-penalty SAE (Anthropic, "Circuits Updates, February 2024"; docs/variants.md#tanh):
// the L1 term becomes Σ_i (A/B)·tanh(B·f_i‖d_i‖). The slope at 0 is A (like an L1 with
// coefficient A: same pressure on marginal features), and the penalty saturates at A/B, so
// strongly active features are not shrunk. A = sae.l1_coefficient, B = sae.tanh_scale.
//   ∂/∂f_i = A‖d_i‖·sech²(B f_i‖d_i‖),  ∂/∂‖d_i‖ = A f_i·sech²(B f_i‖d_i‖)
import type { Arr } from "../../engine/types.ts";
import { z } from "zod";
import type { Dims, SaeModel } from "../variant.ts";
import { defineVariant, foldIntoEncoderBias, plainFromSaeLens, plainToSaeLens } from "../variant.ts";
import { createReluSae, type Penalty } from "../relu.ts";
import { l1_coefficient } from "../keys.ts";
import { tanhEquations } from "./equations.ts";
import { SAELENS_STANDARD } from "../standard/index.ts";

export interface TanhOptions {
  /** B: inverse saturation scale, in (normalised) activation units */
  tanhScale: number;
  flavour: "constrained" | "april";
  applyBDecToInput: boolean;
  fixedInputBias?: Arr | null;
  /** test hook: force the dense or the sparse computation */
  path?: "auto" | "dense" | "sparse";
}

export function tanhPenalty(Bt: number): Penalty {
  const sech2 = (x: number) => {
    const t = Math.tanh(x);
    return 1 - t * t;
  };
  return {
    value: (u, n) => Math.tanh(Bt * u * n) / Bt,
    du: (u, n) => n * sech2(Bt * u * n),
    dn: (u, n) => u * sech2(Bt * u * n),
  };
}

export function createTanh(dims: Dims, opt: TanhOptions): SaeModel {
  return createReluSae(dims, "tanh", { penalty: tanhPenalty(opt.tanhScale), unitNormDecoder: opt.flavour === "constrained", applyBDecToInput: opt.applyBDecToInput, fixedInputBias: opt.fixedInputBias, path: opt.path, scaleParam: null });
}

const keys = {
  /** A, the penalty's slope at 0 (sae.l1_coefficient) */
  l1_coefficient,
  /** B, the inverse saturation scale: penalty (A/B)·tanh(B·f‖d‖) */
  tanh_scale: z.number().positive().default(4),
};

export const tanh = defineVariant(keys, {
  name: "tanh",
  equations: tanhEquations,
  eqSettings: (s) => ({ tanhScale: s.tanh_scale }),
  title: "TanH penalty (Anthropic, Feb 2024)",
  flavours: ["april", "constrained"],
  defaults: { init_norm: 0.1 },
  defaultLr: () => 1e-3,
  coefficient: (s) => s.l1_coefficient,
  knob: { key: "l1_coefficient", label: "A" },
  specs: (dims, s) => options(dims, s, null).specs,
  create: options,
  foldInputBias: foldIntoEncoderBias,
  toSaeLens: plainToSaeLens(SAELENS_STANDARD),
  fromSaeLens: plainFromSaeLens,
});

function options(dims: Dims, s: { flavour?: string; apply_b_dec_to_input: boolean; tanh_scale: number }, fixedInputBias: Arr | null): SaeModel {
  return createTanh(dims, { tanhScale: s.tanh_scale, flavour: s.flavour as TanhOptions["flavour"], applyBDecToInput: s.apply_b_dec_to_input, fixedInputBias });
}
