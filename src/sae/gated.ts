// Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse
// Autoencoders", arXiv 2404.16014; sae-variants.md §2.4). Separate gate and magnitude paths with
// tied weights, W_mag = W_gate·diag(exp(r_mag)):
//   Z = (X − b_dec) W_gateᵀ;  π_gate = Z + b_gate;  π_mag = Z ⊙ e^{r_mag} + b_mag     [B, H]
//   F = 1[π_gate > 0] ⊙ ReLU(π_mag);  X̂ = F W_dec + b_dec
//   loss = mean_b [ ‖x − x̂‖² + λ‖ReLU(π_gate)‖₁ + ‖x − (ReLU(π_gate) sg(W_dec) + sg(b_dec))‖² ]
// flavour `paper`: the auxiliary reconstruction goes through a stop-gradient copy of the decoder
// (b_dec still learns through the encoder input), unit-norm decoder, plain L1.
// flavour `saelens`: no stop-gradient, penalty λ·Σ_i ReLU(π_gate)_i‖d_i‖, free decoder (SAELens v6).
// The gate passes no gradient: gate parameters learn from the penalty and the auxiliary term only.
// W_gate is stored as W_enc (SAELens's name); there is no b_enc.
import type { Arr } from "../engine/types.ts";
import type { Dims, ForwardResult, SaeModel, StepInput } from "./variant.ts";
import { Workspace, backpropInputBias, centerInput, denseDecode, residual, scaled } from "./variant.ts";
import type { ParamSet } from "./params.ts";

export interface GatedOptions {
  flavour: "paper" | "saelens";
  applyBDecToInput: boolean;
  /** subtract this constant instead of b_dec (see SaeModel.fixedInputBias) */
  fixedInputBias?: Arr | null;
}

export function createGated(dims: Dims, opt: GatedOptions): SaeModel {
  const { D, H } = dims;
  const ws = new Workspace();
  const saelens = opt.flavour === "saelens";
  // cache of the last forward
  let Xc: Arr, Z: Arr, F: Arr, A: Arr, E: Arr, Eaux: Arr, norms: Arr, colSumA: Arr;

  return {
    variant: "gated",
    dims,
    workspaceBytes: () => ws.bytes(),
    specs: [
      { name: "W_enc", shape: [H, D] },
      { name: "b_gate", shape: [H] },
      { name: "r_mag", shape: [H] },
      { name: "b_mag", shape: [H] },
      { name: "W_dec", shape: [H, D] },
      { name: "b_dec", shape: [D] },
    ],
    unitNormDecoder: !saelens,
    applyBDecToInput: opt.applyBDecToInput,
    fixedInputBias: opt.fixedInputBias ?? null,

    forward({ e, p, X, B, coeff }): ForwardResult {
      const Wg = p.get("W_enc"), bGate = p.get("b_gate"), rMag = p.get("r_mag"), bMag = p.get("b_mag");
      const Wdec = p.get("W_dec"), bDec = p.get("b_dec");
      Xc = centerInput(X, opt.fixedInputBias ?? bDec, opt.applyBDecToInput, B, D, ws.f("Xc", B * D, X));
      Z = ws.f("Z", B * H, X);
      e.gemm(false, true, B, H, D, 1, Xc, Wg, 0, Z);
      F = ws.f("F", B * H, X);
      A = ws.f("A", B * H, X); // ReLU(π_gate)
      for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) {
        const z = Z[b * H + i];
        const gate = z + bGate[i], mag = z * Math.exp(rMag[i]) + bMag[i];
        A[b * H + i] = gate > 0 ? gate : 0;
        F[b * H + i] = gate > 0 && mag > 0 ? mag : 0;
      }
      const Xhat = ws.f("Xhat", B * D, X);
      denseDecode(e, F, Wdec, bDec, dims, B, Xhat);
      E = ws.f("E", B * D, X);
      const mse = residual(Xhat, X, E) / B;
      // auxiliary reconstruction from the gate activations
      const XhatAux = ws.f("XhatAux", B * D, X);
      denseDecode(e, A, Wdec, bDec, dims, B, XhatAux);
      Eaux = ws.f("Eaux", B * D, X);
      const aux = residual(XhatAux, X, Eaux) / B;
      colSumA = ws.f("colSumA", H, X);
      e.colSum(A, B, H, colSumA, false);
      norms = ws.f("norms", H, X);
      if (saelens) e.rowNorms(Wdec, H, D, norms);
      else norms.fill(1);
      let pen = 0;
      for (let i = 0; i < H; i++) pen += colSumA[i] * norms[i];
      const sparsity = (coeff * pen) / B;
      return { terms: { loss: mse + sparsity + aux, mse, sparsity, aux }, code: { kind: "dense", F }, Xhat };
    },

    backward({ e, p, X, B, coeff }: StepInput, g: ParamSet): void {
      const Wg = p.get("W_enc"), rMag = p.get("r_mag"), Wdec = p.get("W_dec");
      const dWg = g.get("W_enc"), dbGate = g.get("b_gate"), drMag = g.get("r_mag"), dbMag = g.get("b_mag");
      const dWdec = g.get("W_dec"), dbDec = g.get("b_dec");
      const c = coeff / B;
      // main reconstruction
      const G = scaled(E, 2 / B, ws.f("G", B * D, X));
      e.colSum(G, B, D, dbDec, true);
      e.gemm(true, false, H, D, B, 1, F, G, 1, dWdec);
      const Gmag = ws.f("Gmag", B * H, X);
      e.gemm(false, true, B, H, D, 1, G, Wdec, 0, Gmag);
      e.reluBackward(Gmag, F, null, B, H); // F > 0 exactly where the gate is open and π_mag > 0
      // auxiliary reconstruction + penalty, into the gate pre-activation
      const Gaux = scaled(Eaux, 2 / B, ws.f("Gaux", B * D, X));
      if (saelens) {
        e.colSum(Gaux, B, D, dbDec, true);
        e.gemm(true, false, H, D, B, 1, A, Gaux, 1, dWdec);
      }
      const Ggate = ws.f("Ggate", B * H, X);
      e.gemm(false, true, B, H, D, 1, Gaux, Wdec, 0, Ggate);
      const colAdd = ws.f("colAdd", H, X);
      for (let i = 0; i < H; i++) colAdd[i] = c * norms[i];
      e.reluBackward(Ggate, A, colAdd, B, H);
      if (saelens && coeff !== 0) {
        // ∂(λ/B Σ_i colSumA_i‖d_i‖)/∂d_i = λ/B·colSumA_i·d_i/‖d_i‖
        for (let i = 0; i < H; i++) {
          const f = norms[i] > 0 ? (c * colSumA[i]) / norms[i] : 0;
          for (let d = 0; d < D; d++) dWdec[i * D + d] += f * Wdec[i * D + d];
        }
      }
      // π_mag = Z ⊙ e^{r_mag} + b_mag, π_gate = Z + b_gate → G_Z = G_mag ⊙ e^{r_mag} + G_gate
      const GZ = Ggate; // G_Z overwrites the gate gradient in place, row by row
      const er = ws.f("expR", H, X);
      for (let i = 0; i < H; i++) er[i] = Math.exp(rMag[i]);
      for (let b = 0; b < B; b++) {
        const o = b * H;
        for (let i = 0; i < H; i++) {
          const gm = Gmag[o + i], gg = Ggate[o + i];
          dbMag[i] += gm;
          drMag[i] += gm * Z[o + i] * er[i];
          dbGate[i] += gg;
          GZ[o + i] = gm * er[i] + gg;
        }
      }
      e.gemm(true, false, H, D, B, 1, GZ, Xc, 1, dWg);
      if (opt.applyBDecToInput && !opt.fixedInputBias) {
        const gzSum = ws.f("gzSum", H, X);
        e.colSum(GZ, B, H, gzSum, false);
        backpropInputBias(e, gzSum, Wg, dims, dbDec);
      }
    },
  };
}

/** The JumpReLU threshold equivalent to a Gated SAE's gate: θ = b_mag − e^{r_mag} ⊙ b_gate (on π_mag). */
export function gatedThreshold(p: ParamSet): Float64Array {
  const bMag = p.get("b_mag"), rMag = p.get("r_mag"), bGate = p.get("b_gate");
  return Float64Array.from(bMag, (bm, i) => bm - Math.exp(rMag[i]) * bGate[i]);
}
