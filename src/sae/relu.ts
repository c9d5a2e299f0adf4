// The dense ReLU pipeline shared by Standard, TanH and Scaled SAEs; each of those files supplies
// its sparsity penalty (and Scaled its per-latent scale s). Five GEMMs per step:
//   U = ReLU((X − a·b_dec) W_encᵀ + b_enc)   [B, H]   unscaled code, the penalty's argument
//   F = U ⊙ s (scaled) or U                  [B, H]
//   X̂ = F W_dec + b_dec                      [B, D]
//   loss = mean_b [ Σ_d (x − x̂)² + λ·penalty(U, ‖d‖) ]
import type { Arr } from "../engine/types.ts";
import type { Dims, ForwardResult, SaeModel, StepInput } from "./variant.ts";
import { Workspace, backpropInputBias, centerInput, denseDecode, residual, scaled, standardSpecs } from "./variant.ts";
import type { ParamSet } from "./params.ts";

/**
 * A sparsity penalty Σ_b Σ_i φ(U_bi, n_i), with n_i = ‖d_i‖ (1 for a unit-norm decoder).
 * Linear penalties give a per-latent gradient (colAdd); others add per element.
 */
export interface Penalty {
  /** Σ_b Σ_i φ(U_bi, n_i), coefficient excluded. colSumU = Σ_b U_bi. */
  value(U: Arr, n: Arr, B: number, H: number, colSumU: Arr): number;
  /** ∂φ/∂U as a per-latent constant (linear penalties): out[i] = c·∂φ/∂U_i */
  colGrad?(n: Arr, c: number, out: Arr): void;
  /** otherwise, GU[b,i] += c·∂φ/∂U_bi, for U_bi > 0 */
  addGrad?(GU: Arr, U: Arr, n: Arr, c: number, B: number, H: number): void;
  /** out[i] = c·Σ_b ∂φ/∂n_i (only used when the decoder is free) */
  normGrad(U: Arr, n: Arr, c: number, B: number, H: number, colSumU: Arr, out: Arr): void;
}

export interface ReluOptions {
  variant: string;
  penalty: Penalty;
  unitNormDecoder: boolean;
  applyBDecToInput: boolean;
  /** a per-latent scale s applied after the ReLU (Scaled SAE) */
  scale: boolean;
  /** subtract this constant instead of b_dec (see SaeModel.fixedInputBias) */
  fixedInputBias?: Arr | null;
}

export function createReluSae(dims: Dims, opt: ReluOptions): SaeModel {
  const { D, H } = dims;
  const ws = new Workspace();
  const specs = standardSpecs(dims);
  if (opt.scale) specs.push({ name: "s", shape: [H] });
  let U: Arr, F: Arr, Xc: Arr, E: Arr, colSumU: Arr, norms: Arr; // cache of the last forward

  return {
    variant: opt.variant,
    dims,
    specs,
    unitNormDecoder: opt.unitNormDecoder,
    applyBDecToInput: opt.applyBDecToInput,
    fixedInputBias: opt.fixedInputBias ?? null,

    forward({ e, p, X, B, coeff }): ForwardResult {
      const Wenc = p.get("W_enc"), bEnc = p.get("b_enc"), Wdec = p.get("W_dec"), bDec = p.get("b_dec");
      Xc = centerInput(X, opt.fixedInputBias ?? bDec, opt.applyBDecToInput, B, D, ws.f("Xc", B * D, X));
      U = ws.f("U", B * H, X);
      e.gemm(false, true, B, H, D, 1, Xc, Wenc, 0, U);
      e.addBias(U, bEnc, B, H, true);
      F = U;
      if (opt.scale) {
        const s = p.get("s");
        F = ws.f("F", B * H, X);
        for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) F[b * H + i] = U[b * H + i] * s[i];
      }
      const Xhat = ws.f("Xhat", B * D, X);
      denseDecode(e, F, Wdec, bDec, dims, B, Xhat);
      E = ws.f("E", B * D, X);
      const mse = residual(Xhat, X, E) / B;
      colSumU = ws.f("colSumU", H, X);
      e.colSum(U, B, H, colSumU, false);
      norms = ws.f("norms", H, X);
      if (opt.unitNormDecoder) norms.fill(1);
      else e.rowNorms(Wdec, H, D, norms);
      const sparsity = coeff === 0 ? 0 : (coeff * opt.penalty.value(U, norms, B, H, colSumU)) / B;
      return { terms: { loss: mse + sparsity, mse, sparsity, aux: 0 }, code: { kind: "dense", F }, Xhat };
    },

    backward({ e, p, X, B, coeff }: StepInput, g: ParamSet): void {
      const Wenc = p.get("W_enc"), Wdec = p.get("W_dec");
      const dWenc = g.get("W_enc"), dbEnc = g.get("b_enc"), dWdec = g.get("W_dec"), dbDec = g.get("b_dec");
      const c = coeff / B;
      const G = scaled(E, 2 / B, ws.f("G", B * D, X)); // dL/dX̂  [B, D]
      e.colSum(G, B, D, dbDec, true);
      e.gemm(true, false, H, D, B, 1, F, G, 1, dWdec); // dW_dec += Fᵀ G
      const GU = ws.f("GU", B * H, X);
      e.gemm(false, true, B, H, D, 1, G, Wdec, 0, GU); // dL/dF = G W_decᵀ  [B, H]
      if (opt.scale) {
        // F = U ⊙ s: ds_i = Σ_b dF_bi U_bi, dU = dF ⊙ s
        const s = p.get("s"), ds = g.get("s");
        for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) {
          ds[i] += GU[b * H + i] * U[b * H + i];
          GU[b * H + i] *= s[i];
        }
      }
      let colAdd: Arr | null = null;
      if (coeff !== 0 && opt.penalty.colGrad) {
        colAdd = ws.f("colAdd", H, X);
        opt.penalty.colGrad(norms, c, colAdd);
      } else if (coeff !== 0) {
        opt.penalty.addGrad!(GU, U, norms, c, B, H);
      }
      e.reluBackward(GU, U, colAdd, B, H); // GU is now dL/dP
      if (coeff !== 0 && !opt.unitNormDecoder) {
        // ∂penalty/∂d_i = (∂penalty/∂n_i)·d_i/n_i: a row scaling of W_dec added into dW_dec
        const rowScale = ws.f("rowScale", H, X);
        opt.penalty.normGrad(U, norms, c, B, H, colSumU, rowScale);
        for (let i = 0; i < H; i++) rowScale[i] = norms[i] > 0 ? rowScale[i] / norms[i] : 0;
        e.scatterRows(iota(ws, H), rowScale, H, 1, Wdec, H, D, dWdec);
      }
      e.gemm(true, false, H, D, B, 1, GU, Xc, 1, dWenc); // dW_enc += dPᵀ Xc
      const gpSum = ws.f("gpSum", H, X);
      e.colSum(GU, B, H, gpSum, false);
      for (let i = 0; i < H; i++) dbEnc[i] += gpSum[i];
      if (opt.applyBDecToInput && !opt.fixedInputBias) backpropInputBias(e, gpSum, Wenc, dims, dbDec);
    },
  };
}

function iota(ws: Workspace, n: number): Int32Array {
  const a = ws.i("iota", n);
  if (n > 1 && a[n - 1] !== n - 1) for (let i = 0; i < n; i++) a[i] = i;
  return a;
}

/** L1 on the (decoder-norm-weighted) code: φ(u, n) = u·n. */
export const l1Penalty: Penalty = {
  value(_U, n, _B, H, colSumU) {
    let s = 0;
    for (let i = 0; i < H; i++) s += colSumU[i] * n[i];
    return s;
  },
  colGrad(n, c, out) {
    for (let i = 0; i < n.length; i++) out[i] = c * n[i];
  },
  normGrad(_U, _n, c, _B, H, colSumU, out) {
    for (let i = 0; i < H; i++) out[i] = c * colSumU[i];
  },
};
