// Pieces shared by the variants whose code is K (index, value) pairs per row (TopK, BatchTopK):
// the gradient through the selected latents, and AuxK (Gao et al. 2024, sae-variants.md §2.5).
import type { Arr, Engine } from "../engine/types.ts";
import type { Dims } from "./variant.ts";
import { Workspace, scaled } from "./variant.ts";

/**
 * Backward through a sparse code with the selection held constant:
 *   dW_dec[idx] += val·G,  dF = G·W_dec[idx]ᵀ,  dP = dF where val > 0,  dW_enc[idx] += dP·Xc.
 * Adds each latent's Σ_b dP into gpSum [H] (for db_enc and the pre-encoder bias).
 * Shapes: idx, val [B, k]; G, Xc [B, D]; W_dec, dW_dec, dW_enc [H, D].
 */
export function sparseBackward(e: Engine, ws: Workspace, name: string, dims: Dims, B: number, k: number, idx: Int32Array, val: Arr, G: Arr, Wdec: Arr, Xc: Arr, dWdec: Arr, dWenc: Arr, gpSum: Arr): void {
  const { D, H } = dims;
  e.scatterRows(idx, val, B, k, G, H, D, dWdec);
  const gp = ws.f(name, B * k, G);
  e.gatherDot(idx, B, k, G, Wdec, H, D, gp);
  for (let j = 0; j < B * k; j++) {
    if (!(val[j] > 0)) gp[j] = 0;
    gpSum[idx[j]] += gp[j];
  }
  e.scatterRows(idx, gp, B, k, Xc, H, D, dWenc);
}

/**
 * AuxK: each row's k_aux largest pre-activations among dead latents (ReLU'd) reconstruct the
 * residual e = sg(x − x̂) without b_dec; loss Σ‖ê − e‖² / Σ‖e − ē‖² (variance-normalised; 0 when the
 * denominator is 0 or no latent is dead). Gradients reach only the dead latents.
 */
export class AuxK {
  private state: { kAux: number; idx: Int32Array; val: Arr; diff: Arr; den: number } | null = null;
  private readonly ws: Workspace;
  private readonly dims: Dims;
  private readonly kAuxMax: number;
  readonly alpha: number;

  constructor(dims: Dims, kAuxMax: number, alpha: number, ws: Workspace) {
    this.dims = dims;
    this.kAuxMax = kAuxMax;
    this.alpha = alpha;
    this.ws = ws;
  }

  /** P: pre-activations without b_enc [B, H]; E = X̂ − X [B, D]. Returns the loss before α. */
  forward(e: Engine, P: Arr, bEnc: Arr, Wdec: Arr, E: Arr, B: number, dead: Uint8Array | null, auxTarget?: Arr): number {
    const { D, H } = this.dims;
    const ws = this.ws;
    this.state = null;
    const nDead = dead ? dead.reduce((s, v) => s + v, 0) : 0;
    if (!dead || nDead === 0 || this.alpha === 0) return 0;
    const kAux = Math.min(this.kAuxMax, nDead);
    const idx = ws.i("auxIdx", B * kAux), val = ws.f("auxVal", B * kAux, E);
    e.topkRows(P, bEnc, dead, B, H, kAux, idx, val);
    const eHat = ws.f("auxHat", B * D, E);
    e.gatherRows(idx, val, B, kAux, Wdec, H, D, null, eHat);
    let target = auxTarget;
    if (!target) {
      target = ws.f("auxTarget", B * D, E);
      for (let i = 0; i < B * D; i++) target[i] = -E[i];
    }
    const mean = new Float64Array(D);
    for (let b = 0; b < B; b++) for (let d = 0; d < D; d++) mean[d] += target[b * D + d] / B;
    let den = 0, num = 0;
    const diff = ws.f("auxDiff", B * D, E);
    for (let i = 0; i < B * D; i++) {
      den += (target[i] - mean[i % D]) ** 2;
      diff[i] = eHat[i] - target[i];
      num += diff[i] * diff[i];
    }
    if (!(den > 0)) return 0;
    this.state = { kAux, idx, val, diff, den };
    return num / den;
  }

  /** d(α·num/den)/dê = α·2/den·(ê − e), pushed through the aux selection. ê has no b_dec. */
  backward(e: Engine, B: number, Wdec: Arr, Xc: Arr, dWdec: Arr, dWenc: Arr, gpSum: Arr): void {
    const s = this.state;
    if (!s) return;
    const Ga = scaled(s.diff, (this.alpha * 2) / s.den, this.ws.f("Gaux", B * this.dims.D, s.diff));
    sparseBackward(e, this.ws, "gpAux", this.dims, B, s.kAux, s.idx, s.val, Ga, Wdec, Xc, dWdec, dWenc, gpSum);
  }
}
