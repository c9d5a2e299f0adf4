// TanH-penalty SAE (Anthropic, "Circuits Updates, February 2024", sae-variants.md §2.2):
// the L1 term becomes Σ_i (A/B)·tanh(B·f_i‖d_i‖). The slope at 0 is A (like an L1 with
// coefficient A: same pressure on marginal features), and the penalty saturates at A/B, so
// strongly active features are not shrunk. A = sae.l1_coefficient, B = sae.tanh_scale.
//   ∂/∂f_i = A‖d_i‖·sech²(B f_i‖d_i‖),  ∂/∂‖d_i‖ = A f_i·sech²(B f_i‖d_i‖)
import type { Arr } from "../engine/types.ts";
import type { Dims, SaeModel } from "./variant.ts";
import { createReluSae, type Penalty } from "./relu.ts";

export interface TanhOptions {
  /** B: inverse saturation scale, in (normalised) activation units */
  tanhScale: number;
  flavour: "constrained" | "april";
  applyBDecToInput: boolean;
  fixedInputBias?: Arr | null;
}

export function tanhPenalty(Bt: number): Penalty {
  const sech2 = (x: number) => {
    const t = Math.tanh(x);
    return 1 - t * t;
  };
  return {
    value(U, n, B, H) {
      let s = 0;
      for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) {
        const u = U[b * H + i];
        if (u > 0) s += Math.tanh(Bt * u * n[i]) / Bt;
      }
      return s;
    },
    addGrad(GU, U, n, c, B, H) {
      for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) {
        const u = U[b * H + i];
        if (u > 0) GU[b * H + i] += c * n[i] * sech2(Bt * u * n[i]);
      }
    },
    normGrad(U, n, c, B, H, _colSumU, out) {
      out.fill(0);
      for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) {
        const u = U[b * H + i];
        if (u > 0) out[i] += c * u * sech2(Bt * u * n[i]);
      }
    },
  };
}

export function createTanh(dims: Dims, opt: TanhOptions): SaeModel {
  return createReluSae(dims, { variant: "tanh", penalty: tanhPenalty(opt.tanhScale), unitNormDecoder: opt.flavour === "constrained", applyBDecToInput: opt.applyBDecToInput, fixedInputBias: opt.fixedInputBias, scale: false });
}
