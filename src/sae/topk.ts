// TopK SAE (Gao et al. 2024, arXiv 2406.04093; OpenAI sparse_autoencoder, EleutherAI sparsify),
// with the AuxK auxiliary loss for dead latents (sae-variants.md §2.5).
//   P = (X − b_dec) W_encᵀ + b_enc; keep each row's K largest entries, ReLU them; X̂ = F W_dec + b_dec.
//   loss = Σ_d (x − x̂)² (mean over tokens) + α·AuxK
//   AuxK = Σ‖ê − e‖² / Σ‖e − ē‖², e = sg(x − x̂), ê = Z_aux W_dec (no b_dec), Z_aux = each row's
//          k_aux largest pre-activations among dead latents (ReLU'd).
// The code is sparse: decode gathers K decoder rows, and weight gradients touch only the selected
// latents (sparse outer products), so after the encoder GEMM a step costs O(B·K·D).
import type { Arr } from "../engine/types.ts";
import type { Dims, ForwardResult, SaeModel, StepInput } from "./variant.ts";
import { Workspace, backpropInputBias, centerInput, residual, scaled, standardSpecs } from "./variant.ts";
import type { ParamSet } from "./params.ts";

export interface TopKOptions {
  k: number;
  kAux: number;
  auxCoefficient: number;
  applyBDecToInput: boolean;
}

export function createTopK(dims: Dims, opt: TopKOptions): SaeModel {
  const { D, H } = dims;
  const K = opt.k;
  const ws = new Workspace();
  // cache of the last forward
  let Xc: Arr, E: Arr, idx: Int32Array, val: Arr;
  let aux: { kAux: number; idx: Int32Array; val: Arr; diff: Arr; den: number } | null = null;

  return {
    variant: "topk",
    dims,
    specs: standardSpecs(dims),
    unitNormDecoder: true,
    applyBDecToInput: opt.applyBDecToInput,

    forward({ e, p, X, B, dead, auxTarget }): ForwardResult {
      const Wenc = p.get("W_enc"), bEnc = p.get("b_enc"), Wdec = p.get("W_dec"), bDec = p.get("b_dec");
      Xc = centerInput(X, bDec, opt.applyBDecToInput, B, D, ws.f("Xc", B * D, X));
      const P = ws.f("P", B * H, X); // pre-activations without b_enc  [B, H]
      e.gemm(false, true, B, H, D, 1, Xc, Wenc, 0, P);
      idx = ws.i("idx", B * K);
      val = ws.f("val", B * K, X);
      e.topkRows(P, bEnc, null, B, H, K, idx, val);
      const Xhat = ws.f("Xhat", B * D, X);
      e.gatherRows(idx, val, B, K, Wdec, H, D, bDec, Xhat);
      E = ws.f("E", B * D, X);
      const mse = residual(Xhat, X, E) / B;

      aux = null;
      let auxLoss = 0;
      const nDead = dead ? dead.reduce((s, v) => s + v, 0) : 0;
      if (dead && nDead > 0 && opt.auxCoefficient > 0) {
        const kAux = Math.min(opt.kAux, nDead);
        const aIdx = ws.i("auxIdx", B * kAux), aVal = ws.f("auxVal", B * kAux, X);
        e.topkRows(P, bEnc, dead, B, H, kAux, aIdx, aVal);
        const eHat = ws.f("auxHat", B * D, X);
        e.gatherRows(aIdx, aVal, B, kAux, Wdec, H, D, null, eHat);
        // target residual e = x − x̂ = −E, held constant (stop-gradient)
        let target = auxTarget;
        if (!target) {
          target = ws.f("auxTarget", B * D, X);
          for (let i = 0; i < B * D; i++) target[i] = -E[i];
        }
        const mean = new Float64Array(D);
        for (let b = 0; b < B; b++) for (let d = 0; d < D; d++) mean[d] += target[b * D + d] / B;
        let den = 0, num = 0;
        const diff = ws.f("auxDiff", B * D, X);
        for (let i = 0; i < B * D; i++) {
          den += (target[i] - mean[i % D]) ** 2;
          diff[i] = eHat[i] - target[i];
          num += diff[i] * diff[i];
        }
        if (den > 0) {
          auxLoss = num / den;
          aux = { kAux, idx: aIdx, val: aVal, diff, den };
        }
      }
      const loss = mse + opt.auxCoefficient * auxLoss;
      return { terms: { loss, mse, sparsity: 0, aux: auxLoss }, code: { kind: "sparse", k: K, idx, val }, Xhat };
    },

    backward({ e, p, X, B }: StepInput, g: ParamSet): void {
      const Wenc = p.get("W_enc"), Wdec = p.get("W_dec");
      const dWenc = g.get("W_enc"), dbEnc = g.get("b_enc"), dWdec = g.get("W_dec"), dbDec = g.get("b_dec");
      const gpSum = ws.f("gpSum", H, X);
      gpSum.fill(0);
      // Gradient through K selected latents per row: dW_dec[idx] += val·G, dF = G·W_dec[idx],
      // dP = dF where the kept value is positive, dW_enc[idx] += dP·Xc. The selection is constant.
      const through = (G: Arr, kk: number, ii: Int32Array, vv: Arr, name: string) => {
        e.scatterRows(ii, vv, B, kk, G, H, D, dWdec);
        const gp = ws.f(name, B * kk, X);
        e.gatherDot(ii, B, kk, G, Wdec, H, D, gp);
        for (let j = 0; j < B * kk; j++) {
          if (!(vv[j] > 0)) gp[j] = 0;
          gpSum[ii[j]] += gp[j];
        }
        e.scatterRows(ii, gp, B, kk, Xc, H, D, dWenc);
      };
      const G = scaled(E, 2 / B, ws.f("G", B * D, X));
      e.colSum(G, B, D, dbDec, true);
      through(G, K, idx, val, "gp");
      if (aux) {
        // d(α·num/den)/dê = α·2/den·(ê − e); ê has no b_dec, so b_dec gets nothing from AuxK here
        const Ga = scaled(aux.diff, (opt.auxCoefficient * 2) / aux.den, ws.f("Gaux", B * D, X));
        through(Ga, aux.kAux, aux.idx, aux.val, "gpAux");
      }
      for (let i = 0; i < H; i++) dbEnc[i] += gpSum[i];
      if (opt.applyBDecToInput) backpropInputBias(e, gpSum, Wenc, dims, dbDec);
    },
  };
}
