// TanH-penalty SAE (Anthropic, "Circuits Updates, February 2024", sae-variants.md §2.2):
// the L1 term becomes Σ_i (A/B)·tanh(B·f_i‖d_i‖). The slope at 0 is A (like an L1 with
// coefficient A: same pressure on marginal features), and the penalty saturates at A/B, so
// strongly active features are not shrunk. A = sae.l1_coefficient, B = sae.tanh_scale.
//   ∂/∂f_i = A‖d_i‖·sech²(B f_i‖d_i‖),  ∂/∂‖d_i‖ = A f_i·sech²(B f_i‖d_i‖)
import type { Arr } from "../../engine/types.ts";
import type { Dims, SaeModel } from "../variant.ts";
import { createReluSae, type Penalty } from "../relu.ts";

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
  return createReluSae(dims, { variant: "tanh", penalty: tanhPenalty(opt.tanhScale), unitNormDecoder: opt.flavour === "constrained", applyBDecToInput: opt.applyBDecToInput, fixedInputBias: opt.fixedInputBias, path: opt.path, scale: false });
}
