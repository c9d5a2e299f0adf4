// The ReLU pipeline shared by Standard, TanH and Scaled SAEs; each of those files supplies its
// sparsity penalty (and Scaled its per-latent scale s).
//   U = ReLU((X − a·b_dec) W_encᵀ + b_enc)   [B, H]   unscaled code, the penalty's argument
//   F = U ⊙ s (scaled) or U                  [B, H]
//   X̂ = F W_dec + b_dec                      [B, D]
//   loss = mean_b [ Σ_d (x − x̂)² + λ·Σ_i φ(U_i, ‖d_i‖) ]
// Two computations after the encoder GEMM, chosen per batch by the code's density:
//   dense  — four more GEMMs (decode, dW_dec, dF, dW_enc): early in training, when L0 is large;
//   sparse — once every row has at most H/16 active latents (sparse.ts), the code becomes
//            (index, value) pairs and decode and gradients touch only active latents, like TopK.
import type { Arr } from "../engine/types.ts";
import type { Dims, ForwardResult, SaeModel, StepInput } from "./variant.ts";
import { Workspace, backpropInputBias, centerInput, denseDecode, residual, scaled, standardSpecs } from "./variant.ts";
import type { ParamSet } from "./params.ts";
import { Sparsifier } from "./sparse.ts";

/** A sparsity penalty Σ_b Σ_i φ(U_bi, n_i) over active entries (U > 0), n_i = ‖d_i‖ (1 for a unit-norm decoder). */
export interface Penalty {
  value(u: number, n: number): number;
  /** ∂φ/∂u */
  du(u: number, n: number): number;
  /** ∂φ/∂n */
  dn(u: number, n: number): number;
  /** φ = u·n (L1): the dense path then works with per-latent column sums */
  linear?: boolean;
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
  /** test hook: force one computation */
  path?: "auto" | "dense" | "sparse";
}

export function createReluSae(dims: Dims, opt: ReluOptions): SaeModel {
  const { D, H } = dims;
  const ws = new Workspace();
  const specs = standardSpecs(dims);
  if (opt.scale) specs.push({ name: "s", shape: [H] });
  const penalty = opt.penalty;
  // cache of the last forward
  let U: Arr, F: Arr, Xc: Arr, E: Arr, colSumU: Arr, norms: Arr;
  let sparse: { m: number; idx: Int32Array; u: Arr; f: Arr } | null = null;
  const sparsifier = new Sparsifier(H, opt.path);

  return {
    variant: opt.variant,
    dims,
    workspaceBytes: () => ws.bytes(),
    specs,
    unitNormDecoder: opt.unitNormDecoder,
    applyBDecToInput: opt.applyBDecToInput,
    fixedInputBias: opt.fixedInputBias ?? null,

    forward({ e, p, X, B, coeff }): ForwardResult {
      const Wenc = p.get("W_enc"), bEnc = p.get("b_enc"), Wdec = p.get("W_dec"), bDec = p.get("b_dec");
      Xc = centerInput(X, opt.fixedInputBias ?? bDec, opt.applyBDecToInput, B, D, ws.f("Xc", B * D, X));
      U = ws.f("U", B * H, X);
      e.gemm(false, true, B, H, D, 1, Xc, Wenc, 0, U); // pre-activations without b_enc
      norms = ws.f("norms", H, X);
      if (opt.unitNormDecoder) norms.fill(1);
      else e.rowNorms(Wdec, H, D, norms);
      colSumU = ws.f("colSumU", H, X);
      const Xhat = ws.f("Xhat", B * D, X);
      let pen = 0;
      const sp = sparsifier.run(e, ws, U, bEnc, B); // reads P + b_enc > 0 directly
      sparse = sp && { m: sp.m, idx: sp.idx, u: sp.val, f: sp.val };
      if (!sparse) e.addBias(U, bEnc, B, H, true, colSumU); // U = ReLU(P + b_enc), dense, with its column sums
      if (sparse) {
        const { m, idx, u } = sparse;
        if (opt.scale) {
          const s = p.get("s"), f = ws.f("spF", B * m, X);
          for (let j = 0; j < B * m; j++) f[j] = u[j] * s[idx[j]];
          sparse.f = f;
        }
        colSumU.fill(0);
        for (let j = 0; j < B * m; j++) {
          if (u[j] === 0) continue;
          colSumU[idx[j]] += u[j];
          if (!penalty.linear) pen += penalty.value(u[j], norms[idx[j]]);
        }
        e.gatherRows(idx, sparse.f, B, m, Wdec, H, D, bDec, Xhat);
      } else {
        F = U;
        if (opt.scale) {
          const s = p.get("s");
          F = ws.f("F", B * H, X);
          for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) F[b * H + i] = U[b * H + i] * s[i];
        }
        if (!penalty.linear) for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) if (U[b * H + i] > 0) pen += penalty.value(U[b * H + i], norms[i]);
        denseDecode(e, F, Wdec, bDec, dims, B, Xhat);
      }
      if (penalty.linear) for (let i = 0; i < H; i++) pen += colSumU[i] * norms[i];
      E = ws.f("E", B * D, X);
      const mse = residual(Xhat, X, E) / B;
      const sparsity = coeff === 0 ? 0 : (coeff * pen) / B;
      const code = sparse ? { kind: "sparse" as const, k: sparse.m, idx: sparse.idx, val: sparse.f } : { kind: "dense" as const, F };
      return { terms: { loss: mse + sparsity, mse, sparsity, aux: 0 }, code, Xhat };
    },

    backward({ e, p, X, B, coeff }: StepInput, g: ParamSet): void {
      const Wenc = p.get("W_enc"), Wdec = p.get("W_dec");
      const dWenc = g.get("W_enc"), dbEnc = g.get("b_enc"), dWdec = g.get("W_dec"), dbDec = g.get("b_dec");
      const c = coeff / B;
      const G = scaled(E, 2 / B, ws.f("G", B * D, X)); // dL/dX̂  [B, D]
      e.colSum(G, B, D, dbDec, true);
      const gpSum = ws.f("gpSum", H, X);
      const rowScale = ws.f("rowScale", H, X); // c·Σ_b ∂φ/∂n_i, for a free decoder
      rowScale.fill(0);
      if (sparse) {
        // dU at the active entries: from dF (through s) and the penalty; sparseBackward does the rest
        const { m, idx, u } = sparse;
        const gu = ws.f("spGU", B * m, X);
        e.gatherDot(idx, u, B, m, G, Wdec, H, D, gu); // dL/dF at active entries
        e.scatterRows(idx, sparse.f, B, m, G, H, D, dWdec); // dW_dec += Fᵀ G over active entries
        const s = opt.scale ? p.get("s") : null, ds = opt.scale ? g.get("s") : null;
        gpSum.fill(0);
        for (let j = 0; j < B * m; j++) {
          if (!(u[j] > 0)) { gu[j] = 0; continue; }
          const i = idx[j];
          if (s) { ds![i] += gu[j] * u[j]; gu[j] *= s[i]; }
          if (coeff !== 0) {
            gu[j] += c * penalty.du(u[j], norms[i]);
            if (!opt.unitNormDecoder && !penalty.linear) rowScale[i] += c * penalty.dn(u[j], norms[i]);
          }
          gpSum[i] += gu[j];
        }
        e.scatterRows(idx, gu, B, m, Xc, H, D, dWenc); // dW_enc += dPᵀ Xc over active entries
      } else {
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
        if (coeff !== 0 && penalty.linear) {
          colAdd = ws.f("colAdd", H, X);
          for (let i = 0; i < H; i++) colAdd[i] = c * norms[i];
        } else if (coeff !== 0) {
          for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) {
            const u = U[b * H + i];
            if (!(u > 0)) continue;
            GU[b * H + i] += c * penalty.du(u, norms[i]);
            if (!opt.unitNormDecoder) rowScale[i] += c * penalty.dn(u, norms[i]);
          }
        }
        e.reluBackward(GU, U, colAdd, B, H, gpSum); // GU is now dL/dP; gpSum its column sums
        e.gemm(true, false, H, D, B, 1, GU, Xc, 1, dWenc); // dW_enc += dPᵀ Xc
      }
      if (coeff !== 0 && !opt.unitNormDecoder) {
        // ∂penalty/∂d_i = (∂penalty/∂n_i)·d_i/n_i: a row scaling of W_dec added into dW_dec
        if (penalty.linear) for (let i = 0; i < H; i++) rowScale[i] = c * colSumU[i];
        for (let i = 0; i < H; i++) rowScale[i] = norms[i] > 0 ? rowScale[i] / norms[i] : 0;
        e.scatterRows(iota(ws, H), rowScale, H, 1, Wdec, H, D, dWdec);
      }
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
  linear: true,
  value: (u, n) => u * n,
  du: (_u, n) => n,
  dn: (u) => u,
};
