// Standard SAE: ReLU encoder, linear decoder, L1 sparsity penalty. Two flavours
// (sae-variants.md §2.1):
//   constrained — Towards Monosemanticity (Bricken et al. 2023), dictionary_learning
//                 StandardTrainer: unit-norm decoder rows, penalty λ·Σ_i f_i;
//   april       — Anthropic's April-2024 update, dictionary_learning StandardTrainerAprilUpdate,
//                 SAELens `standard`: free decoder, penalty λ·Σ_i f_i·‖d_i‖.
// Loss per token: Σ_d (x − x̂)² + λ_t·penalty, mean over the batch. Dense path: five GEMMs.
import type { Arr } from "../engine/types.ts";
import type { Dims, ForwardResult, SaeModel, StepInput } from "./variant.ts";
import { Workspace, backpropInputBias, centerInput, residual, scaled, standardSpecs } from "./variant.ts";
import type { ParamSet } from "./params.ts";

export interface StandardOptions {
  flavour: "constrained" | "april";
  applyBDecToInput: boolean;
}

export function createStandard(dims: Dims, opt: StandardOptions): SaeModel {
  const { D, H } = dims;
  const ws = new Workspace();
  const april = opt.flavour === "april";
  let F: Arr, Xc: Arr, E: Arr, fSum: Arr, norms: Arr;

  return {
    variant: "standard",
    dims,
    specs: standardSpecs(dims),
    unitNormDecoder: !april,
    applyBDecToInput: opt.applyBDecToInput,

    forward({ e, p, X, B, coeff }): ForwardResult {
      const Wenc = p.get("W_enc"), bEnc = p.get("b_enc"), Wdec = p.get("W_dec"), bDec = p.get("b_dec");
      Xc = centerInput(X, bDec, opt.applyBDecToInput, B, D, ws.f("Xc", B * D, X));
      // F = ReLU(Xc W_encᵀ + b_enc)   [B, H]
      F = ws.f("F", B * H, X);
      e.gemm(false, true, B, H, D, 1, Xc, Wenc, 0, F);
      e.addBias(F, bEnc, B, H, true);
      // X̂ = F W_dec + b_dec   [B, D]
      const Xhat = ws.f("Xhat", B * D, X);
      for (let b = 0; b < B; b++) Xhat.set(bDec, b * D);
      e.gemm(false, false, B, D, H, 1, F, Wdec, 1, Xhat);
      E = ws.f("E", B * D, X);
      const sse = residual(Xhat, X, E);
      // penalty: λ Σ_i f_i (·‖d_i‖ for april), from the per-latent column sums
      fSum = ws.f("fSum", H, X);
      e.colSum(F, B, H, fSum, false);
      norms = ws.f("norms", H, X);
      if (april) e.rowNorms(Wdec, H, D, norms);
      let pen = 0;
      for (let i = 0; i < H; i++) pen += fSum[i] * (april ? norms[i] : 1);
      const mse = sse / B, sparsity = (coeff * pen) / B;
      return { terms: { loss: mse + sparsity, mse, sparsity, aux: 0 }, code: { kind: "dense", F }, Xhat };
    },

    backward({ e, p, X, B, coeff }: StepInput, g: ParamSet): void {
      const Wenc = p.get("W_enc"), Wdec = p.get("W_dec");
      const dWenc = g.get("W_enc"), dbEnc = g.get("b_enc"), dWdec = g.get("W_dec"), dbDec = g.get("b_dec");
      const G = scaled(E, 2 / B, ws.f("G", B * D, X)); // dL/dX̂  [B, D]
      e.colSum(G, B, D, dbDec, true);
      e.gemm(true, false, H, D, B, 1, F, G, 1, dWdec); // dW_dec += Fᵀ G
      const GF = ws.f("GF", B * H, X);
      e.gemm(false, true, B, H, D, 1, G, Wdec, 0, GF); // dL/dF = G W_decᵀ  [B, H]
      // penalty gradient per latent, added only where f > 0 (ReLU mask)
      const colAdd = ws.f("colAdd", H, X);
      for (let i = 0; i < H; i++) colAdd[i] = (coeff / B) * (april ? norms[i] : 1);
      e.reluBackward(GF, F, colAdd, B, H); // GF is now dL/dP
      if (april) {
        // ∂/∂d_i of λ/B·(Σ_b f_bi)·‖d_i‖ = λ/B·fSum_i·d_i/‖d_i‖, as a row scaling of W_dec
        const c = ws.f("rowScale", H, X);
        for (let i = 0; i < H; i++) c[i] = norms[i] > 0 ? ((coeff / B) * fSum[i]) / norms[i] : 0;
        e.scatterRows(iota(ws, H), c, H, 1, Wdec, H, D, dWdec);
      }
      e.gemm(true, false, H, D, B, 1, GF, Xc, 1, dWenc); // dW_enc += G_Pᵀ Xc
      const gpSum = ws.f("gpSum", H, X);
      e.colSum(GF, B, H, gpSum, false);
      for (let i = 0; i < H; i++) dbEnc[i] += gpSum[i];
      if (opt.applyBDecToInput) backpropInputBias(e, gpSum, Wenc, dims, dbDec);
    },
  };
}

function iota(ws: Workspace, n: number): Int32Array {
  const a = ws.i("iota", n);
  if (a[n - 1] !== n - 1) for (let i = 0; i < n; i++) a[i] = i;
  return a;
}
