// Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse
// Autoencoders", arXiv 2404.16014; docs/variants.md#gated). Separate gate and magnitude paths with
// tied weights, W_mag = W_gate·diag(exp(r_mag)):
//   Z = (X − b_dec) W_gateᵀ;  π_gate = Z + b_gate;  π_mag = Z ⊙ e^{r_mag} + b_mag     [B, H]
//   F = 1[π_gate > 0] ⊙ ReLU(π_mag);  X̂ = F W_dec + b_dec
//   loss = mean_b [ ‖x − x̂‖² + λ‖ReLU(π_gate)‖₁ + ‖x − (ReLU(π_gate) sg(W_dec) + sg(b_dec))‖² ]
// flavour `paper`: the auxiliary reconstruction goes through a stop-gradient copy of the decoder
// (b_dec still learns through the encoder input), unit-norm decoder, plain L1.
// flavour `saelens`: no stop-gradient, penalty λ·Σ_i ReLU(π_gate)_i‖d_i‖, free decoder (SAELens v6).
// The gate passes no gradient: gate parameters learn from the penalty and the auxiliary term only.
// W_gate is stored as W_enc (SAELens's name); there is no b_enc.
// As in relu.ts, once no row opens more than H/16 gates (sparse.ts), both decodes and all
// gradients after the encoder GEMM run over the open (row, latent) pairs only.
import type { Arr } from "../../engine/types.ts";
import type { Dims, ForwardResult, SaeModel, StepInput } from "../variant.ts";
import { DECODER, ENCODER, Workspace, addScaledRows, backpropInputBias, centerInput, denseDecode, residual, scaled } from "../variant.ts";
import { Sparsifier } from "../sparse.ts";
import type { ParamSet } from "../params.ts";

export interface GatedOptions {
  flavour: "paper" | "saelens";
  applyBDecToInput: boolean;
  /** subtract this constant instead of b_dec (see SaeModel.fixedInputBias) */
  fixedInputBias?: Arr | null;
  /** test hook: force the dense or the sparse computation */
  path?: "auto" | "dense" | "sparse";
}

/** what backward needs. A = ReLU(π_gate) [B, H]; where a gate is open, Z = A − b_gate. */
interface GatedState {
  Xc: Arr; A: Arr; F: Arr; E: Arr; Eaux: Arr; norms: Arr; colSumA: Arr; er: Arr;
  /** the open gates as (index, value) pairs [B, m], when the sparse computation ran */
  sparse: { m: number; idx: Int32Array; a: Arr; f: Arr; len: Int32Array } | null;
}

export function createGated(dims: Dims, opt: GatedOptions): SaeModel<GatedState> {
  const { D, H } = dims;
  const ws = new Workspace();
  const saelens = opt.flavour === "saelens";
  const sparsifier = new Sparsifier(H, opt.path);

  return {
    variant: "gated",
    dims,
    workspaceBytes: () => ws.bytes(),
    specs: [
      { name: "W_enc", shape: [H, D], groups: ENCODER },
      { name: "b_gate", shape: [H], groups: ENCODER },
      { name: "r_mag", shape: [H], groups: ENCODER },
      { name: "b_mag", shape: [H], groups: ENCODER },
      { name: "W_dec", shape: [H, D], groups: DECODER },
      { name: "b_dec", shape: [D], groups: DECODER },
    ],
    unitNormDecoder: !saelens,
    applyBDecToInput: opt.applyBDecToInput,
    fixedInputBias: opt.fixedInputBias ?? null,

    forward({ e, p, X, B, coeff }): ForwardResult<GatedState> {
      let F: Arr | null = null;
      const Wg = p.get("W_enc"), bGate = p.get("b_gate"), rMag = p.get("r_mag"), bMag = p.get("b_mag");
      const Wdec = p.get("W_dec"), bDec = p.get("b_dec");
      const Xc = centerInput(e, X, opt.fixedInputBias ?? bDec, opt.applyBDecToInput, B, D, ws.f("Xc", B * D, X));
      const A = ws.f("A", B * H, X);
      e.gemm(false, true, B, H, D, 1, Xc, Wg, 0, A); // Z
      const er = ws.f("expR", H, X);
      for (let i = 0; i < H; i++) er[i] = Math.exp(rMag[i]);
      const mag = (a: number, i: number) => (a > 0 ? Math.max(0, (a - bGate[i]) * er[i] + bMag[i]) : 0);
      const Xhat = ws.f("Xhat", B * D, X), XhatAux = ws.f("XhatAux", B * D, X);
      const colSumA = ws.f("colSumA", H, X);
      const sp = sparsifier.run(e, ws, A, bGate, B); // the open gates: Z + b_gate > 0
      const sparse = sp && { m: sp.m, idx: sp.idx, a: sp.val, f: ws.f("spF", B * sp.m, X), len: sp.len };
      if (!sparse) e.addBias(A, bGate, B, H, true, colSumA); // A = ReLU(Z + b_gate), dense, with its column sums
      if (sparse) {
        const { m, idx, a, f, len } = sparse;
        colSumA.fill(0);
        f.fill(0); // the padding
        for (let b = 0; b < B; b++) {
          for (let j = b * m, j1 = j + len[b]; j < j1; j++) {
            f[j] = mag(a[j], idx[j]);
            colSumA[idx[j]] += a[j];
          }
        }
        e.gatherRows2(idx, f, a, B, m, Wdec, H, D, bDec, Xhat, XhatAux); // X̂ and the gate path's X̂_aux
      } else {
        F = ws.f("F", B * H, X);
        for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) F[b * H + i] = mag(A[b * H + i], i);
        denseDecode(e, F, Wdec, bDec, dims, B, Xhat);
        denseDecode(e, A, Wdec, bDec, dims, B, XhatAux);
      }
      const E = ws.f("E", B * D, X);
      const mse = residual(e, Xhat, X, E) / B;
      const Eaux = ws.f("Eaux", B * D, X);
      const aux = residual(e, XhatAux, X, Eaux) / B;
      const norms = ws.f("norms", H, X);
      if (saelens) e.rowNorms(Wdec, H, D, norms);
      else norms.fill(1);
      let pen = 0;
      for (let i = 0; i < H; i++) pen += colSumA[i] * norms[i];
      const sparsity = (coeff * pen) / B;
      const code = sparse ? { kind: "sparse" as const, k: sparse.m, idx: sparse.idx, val: sparse.f } : { kind: "dense" as const, F: F! };
      return { terms: { loss: mse + sparsity + aux, mse, sparsity, aux }, code, Xhat, state: { Xc, A, F: F ?? A, E, Eaux, norms, colSumA, er, sparse } };
    },

    backward({ e, p, X, B, coeff }: StepInput, { Xc, A, F, E, Eaux, norms, colSumA, er, sparse }: GatedState, g: ParamSet): void {
      const Wg = p.get("W_enc"), bGate = p.get("b_gate"), Wdec = p.get("W_dec");
      const dWg = g.get("W_enc"), dbGate = g.get("b_gate"), drMag = g.get("r_mag"), dbMag = g.get("b_mag");
      const dWdec = g.get("W_dec"), dbDec = g.get("b_dec");
      const c = coeff / B;
      const G = scaled(e, E, 2 / B, ws.f("G", B * D, X)); // main reconstruction
      const Gaux = scaled(e, Eaux, 2 / B, ws.f("Gaux", B * D, X)); // auxiliary reconstruction
      e.colSum(G, B, D, dbDec, true);
      if (saelens) e.colSum(Gaux, B, D, dbDec, true); // the paper stops this gradient
      const gzSum = ws.f("gzSum", H, X);
      // per open gate: dπ_mag = gm (where F > 0), dπ_gate = gg, and Z = A − b_gate feeds both
      const accumulate = (i: number, a: number, gm: number, gg: number): number => {
        dbMag[i] += gm;
        drMag[i] += gm * (a - bGate[i]) * er[i];
        dbGate[i] += gg;
        const gz = gm * er[i] + gg;
        gzSum[i] += gz;
        return gz;
      };
      gzSum.fill(0);
      if (sparse) {
        const { m, idx, a, f, len } = sparse;
        // dW_dec += Fᵀ G (+ Aᵀ G_aux for SAELens) with gm = G·W_decᵀ, gg = G_aux·W_decᵀ at the entries
        // (gm is 0 where f = 0, the padding included)
        const gm = ws.f("spGm", B * m, X), gg = ws.f("spGg", B * m, X);
        e.scatterDot(idx, f, f, B, m, G, Wdec, H, D, dWdec, gm);
        if (saelens) e.scatterDot(idx, a, a, B, m, Gaux, Wdec, H, D, dWdec, gg);
        else e.gatherDot(idx, a, B, m, Gaux, Wdec, H, D, gg);
        for (let b = 0; b < B; b++) {
          for (let j = b * m, j1 = j + len[b]; j < j1; j++) {
            const i = idx[j];
            gm[j] = accumulate(i, a[j], f[j] > 0 ? gm[j] : 0, gg[j] + c * norms[i]); // gm now holds dZ
          }
        }
        e.scatterRows(idx, gm, B, m, Xc, H, D, dWg);
      } else {
        e.gemm(true, false, H, D, B, 1, F, G, 1, dWdec);
        if (saelens) e.gemm(true, false, H, D, B, 1, A, Gaux, 1, dWdec);
        const Gmag = ws.f("Gmag", B * H, X), Ggate = ws.f("Ggate", B * H, X);
        e.gemm(false, true, B, H, D, 1, G, Wdec, 0, Gmag);
        e.gemm(false, true, B, H, D, 1, Gaux, Wdec, 0, Ggate);
        for (let b = 0; b < B; b++) {
          const o = b * H;
          for (let i = 0; i < H; i++) {
            const a = A[o + i];
            Ggate[o + i] = a > 0 ? accumulate(i, a, F[o + i] > 0 ? Gmag[o + i] : 0, Ggate[o + i] + c * norms[i]) : 0; // now dZ
          }
        }
        e.gemm(true, false, H, D, B, 1, Ggate, Xc, 1, dWg);
      }
      if (saelens && coeff !== 0) {
        // ∂(λ/B Σ_i colSumA_i‖d_i‖)/∂d_i = λ/B·colSumA_i·d_i/‖d_i‖
        const rowScale = ws.f("rowScale", H, X);
        for (let i = 0; i < H; i++) rowScale[i] = norms[i] > 0 ? (c * colSumA[i]) / norms[i] : 0;
        addScaledRows(e, ws, rowScale, Wdec, dims, dWdec);
      }
      if (opt.applyBDecToInput && !opt.fixedInputBias) backpropInputBias(e, gzSum, Wg, dims, dbDec);
    },
  };
}

/** The JumpReLU threshold equivalent to a Gated SAE's gate: θ = b_mag − e^{r_mag} ⊙ b_gate (on π_mag). */
export function gatedThreshold(p: ParamSet): Float64Array {
  const bMag = p.get("b_mag"), rMag = p.get("r_mag"), bGate = p.get("b_gate");
  return Float64Array.from(bMag, (bm, i) => bm - Math.exp(rMag[i]) * bGate[i]);
}
