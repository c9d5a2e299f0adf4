// TopK SAE (Gao et al. 2024, arXiv 2406.04093; OpenAI sparse_autoencoder, EleutherAI sparsify),
// with the AuxK auxiliary loss for dead latents (sae-variants.md §2.5).
//   P = (X − b_dec) W_encᵀ + b_enc; keep each row's K largest entries, ReLU them; X̂ = F W_dec + b_dec.
//   loss = Σ_d (x − x̂)² (mean over tokens) + α·AuxK
// The code is sparse: decode gathers K decoder rows, and weight gradients touch only the selected
// latents (sparse outer products), so after the encoder GEMM a step costs O(B·K·D).
import type { Arr } from "../engine/types.ts";
import type { Dims, ForwardResult, SaeModel, StepInput } from "./variant.ts";
import { Workspace, backpropInputBias, centerInput, residual, scaled, standardSpecs } from "./variant.ts";
import { AuxK, sparseBackward } from "./sparse.ts";
import type { ParamSet } from "./params.ts";

export interface TopKOptions {
  k: number;
  kAux: number;
  auxCoefficient: number;
  applyBDecToInput: boolean;
  /** subtract this constant instead of b_dec (see SaeModel.fixedInputBias) */
  fixedInputBias?: Arr | null;
}

export function createTopK(dims: Dims, opt: TopKOptions): SaeModel {
  const { D, H } = dims;
  const K = opt.k;
  const ws = new Workspace();
  const auxk = new AuxK(dims, opt.kAux, opt.auxCoefficient, ws);
  let Xc: Arr, E: Arr, idx: Int32Array, val: Arr; // cache of the last forward

  return {
    variant: "topk",
    dims,
    specs: standardSpecs(dims),
    unitNormDecoder: true,
    applyBDecToInput: opt.applyBDecToInput,
    fixedInputBias: opt.fixedInputBias ?? null,

    forward({ e, p, X, B, dead, auxTarget }): ForwardResult {
      const Wenc = p.get("W_enc"), bEnc = p.get("b_enc"), Wdec = p.get("W_dec"), bDec = p.get("b_dec");
      Xc = centerInput(X, opt.fixedInputBias ?? bDec, opt.applyBDecToInput, B, D, ws.f("Xc", B * D, X));
      const P = ws.f("P", B * H, X); // pre-activations without b_enc  [B, H]
      e.gemm(false, true, B, H, D, 1, Xc, Wenc, 0, P);
      idx = ws.i("idx", B * K);
      val = ws.f("val", B * K, X);
      e.topkRows(P, bEnc, null, B, H, K, idx, val);
      const Xhat = ws.f("Xhat", B * D, X);
      e.gatherRows(idx, val, B, K, Wdec, H, D, bDec, Xhat);
      E = ws.f("E", B * D, X);
      const mse = residual(Xhat, X, E) / B;
      const aux = auxk.forward(e, P, bEnc, Wdec, E, B, dead, auxTarget);
      return { terms: { loss: mse + auxk.alpha * aux, mse, sparsity: 0, aux }, code: { kind: "sparse", k: K, idx, val }, Xhat };
    },

    backward({ e, p, X, B }: StepInput, g: ParamSet): void {
      const Wenc = p.get("W_enc"), Wdec = p.get("W_dec");
      const dWenc = g.get("W_enc"), dbEnc = g.get("b_enc"), dWdec = g.get("W_dec"), dbDec = g.get("b_dec");
      const gpSum = ws.f("gpSum", H, X);
      gpSum.fill(0);
      const G = scaled(E, 2 / B, ws.f("G", B * D, X)); // dL/dX̂ [B, D]
      e.colSum(G, B, D, dbDec, true);
      sparseBackward(e, ws, "gp", dims, B, K, idx, val, G, Wdec, Xc, dWdec, dWenc, gpSum);
      auxk.backward(e, B, Wdec, Xc, dWdec, dWenc, gpSum);
      for (let i = 0; i < H; i++) dbEnc[i] += gpSum[i];
      if (opt.applyBDecToInput && !opt.fixedInputBias) backpropInputBias(e, gpSum, Wenc, dims, dbDec);
    },
  };
}
