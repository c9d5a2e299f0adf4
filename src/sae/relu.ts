// The ReLU pipeline shared by the Standard, TanH and Scaled SAEs (docs/variants.md#standard); each
// of those variants supplies its sparsity penalty φ, its decoder handling, and (Scaled) a
// per-latent scale s after the ReLU.
//   U = ReLU((X − a·b_dec) W_encᵀ + b_enc)   [B, H]   unscaled code, the penalty's argument
//   F = U ⊙ s (with a scale) or U            [B, H]
//   X̂ = F W_dec + b_dec                      [B, D]
//   loss = mean_b [ Σ_d (x − x̂)² + λ·Σ_i φ(U_i, ‖d_i‖) ]
// Two computations after the encoder GEMM, chosen per batch by the code's density
// (docs/engine.md#sparse-paths):
//   dense  — four more GEMMs (decode, dW_dec, dF, dW_enc): early in training, when L0 is large;
//   sparse — once every row has at most H/16 active latents (sparse.ts), the code becomes
//            (index, value) pairs and decode and gradients touch only active latents, like TopK.
import type { Arr, Engine } from "../engine/types.ts";
import type { Dims, ForwardResult, SaeModel, StepInput } from "./variant.ts";
import { Workspace, addScaledRows, backpropInputBias, centerInput, denseDecode, residual, scaled, standardSpecs } from "./variant.ts";
import type { ParamSet, ParamSpec } from "./params.ts";
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

/** L1 on the (decoder-norm-weighted) code: φ(u, n) = u·n. */
export const l1Penalty: Penalty = {
  linear: true,
  value: (u, n) => u * n,
  du: (_u, n) => n,
  dn: (u) => u,
};

export interface ReluOptions {
  penalty: Penalty;
  unitNormDecoder: boolean;
  applyBDecToInput: boolean;
  /** the name of a per-latent scale parameter [H] applied after the ReLU (Scaled SAE), or null */
  scaleParam: string | null;
  /** subtract this constant instead of b_dec (see SaeModel.fixedInputBias) */
  fixedInputBias?: Arr | null;
  /** test hook: force one computation */
  path?: "auto" | "dense" | "sparse";
}

/** the active entries of a sparse code: u = U, f = F at (row, idx) pairs [B, m]; u packed (rowsAbove's layout, PackedCode), f = u·s or u itself without a scale */
interface SparseCode { m: number; idx: Int32Array; u: Arr; f: Arr; len: Int32Array }

/** What backward needs from the forward. */
interface ReluState {
  Xc: Arr;
  /** X̂ − X [B, D] */
  E: Arr;
  /** ‖d_i‖ (1 for a unit-norm decoder) [H] */
  norms: Arr;
  /** Σ_b U_bi [H] */
  colSumU: Arr;
  /** dense path: U and F [B, H] (the same array without a scale) */
  U: Arr;
  F: Arr;
  sparse: SparseCode | null;
}

export function createReluSae(dims: Dims, variant: string, opt: ReluOptions, extraSpecs: ParamSpec[] = []): SaeModel<ReluState> {
  const { D, H } = dims;
  const ws = new Workspace();
  const sparsifier = new Sparsifier(H, opt.path);
  const { penalty } = opt;

  function forward({ e, p, X, B, coeff }: StepInput): ForwardResult<ReluState> {
    const Wenc = p.get("W_enc"), bEnc = p.get("b_enc"), Wdec = p.get("W_dec"), bDec = p.get("b_dec");
    const s = opt.scaleParam ? p.get(opt.scaleParam) : null;
    const Xc = centerInput(e, X, opt.fixedInputBias ?? bDec, opt.applyBDecToInput, B, D, ws.f("Xc", B * D, X));
    const U = ws.f("U", B * H, X);
    e.gemm(false, true, B, H, D, 1, Xc, Wenc, 0, U); // pre-activations without b_enc
    const norms = ws.f("norms", H, X);
    if (opt.unitNormDecoder) norms.fill(1);
    else e.rowNorms(Wdec, H, D, norms);
    const colSumU = ws.f("colSumU", H, X);
    const Xhat = ws.f("Xhat", B * D, X);
    const sp = sparsifier.run(e, ws, U, bEnc, B); // reads P + b_enc > 0 directly
    let F = U, sparse: SparseCode | null = null, pen: number;
    if (sp) {
      sparse = { m: sp.m, idx: sp.idx, u: sp.val, f: s ? ws.f("spF", B * sp.m, X) : sp.val, len: sp.len };
      pen = sparseCodePenalty(sparse, B, s, norms, colSumU);
      e.gatherRows(sparse.idx, sparse.f, B, sparse.m, Wdec, H, D, bDec, Xhat);
    } else {
      e.addBias(U, bEnc, B, H, true, colSumU); // U = ReLU(P + b_enc), dense, with its column sums
      if (s) F = scaleColumns(U, s, B, ws.f("F", B * H, X));
      pen = penalty.linear ? 0 : densePenalty(U, B, norms);
      denseDecode(e, F, Wdec, bDec, dims, B, Xhat);
    }
    if (penalty.linear) for (let i = 0; i < H; i++) pen += colSumU[i] * norms[i];
    const E = ws.f("E", B * D, X);
    const mse = residual(e, Xhat, X, E) / B;
    const sparsity = coeff === 0 ? 0 : (coeff * pen) / B;
    return {
      terms: { loss: mse + sparsity, mse, sparsity, aux: 0 },
      code: sparse ? { kind: "sparse", k: sparse.m, idx: sparse.idx, val: sparse.f } : { kind: "dense", F },
      Xhat,
      state: { Xc, E, norms, colSumU, U, F, sparse },
    };
  }

  /** f = u·s at the active entries; fills colSumU; returns Σ φ for a non-linear penalty (0 otherwise) */
  function sparseCodePenalty(c: SparseCode, B: number, s: Arr | null, norms: Arr, colSumU: Arr): number {
    const { m, idx, u, f, len } = c;
    if (s) f.fill(0); // the padding
    colSumU.fill(0);
    let pen = 0;
    for (let b = 0; b < B; b++) {
      for (let j = b * m, j1 = j + len[b]; j < j1; j++) {
        const i = idx[j];
        if (s) f[j] = u[j] * s[i];
        colSumU[i] += u[j];
        if (!penalty.linear) pen += penalty.value(u[j], norms[i]);
      }
    }
    return pen;
  }

  function densePenalty(U: Arr, B: number, norms: Arr): number {
    let pen = 0;
    for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) if (U[b * H + i] > 0) pen += penalty.value(U[b * H + i], norms[i]);
    return pen;
  }

  function backward(inp: StepInput, st: ReluState, g: ParamSet): void {
    const { e, p, X, B, coeff } = inp;
    const dbDec = g.get("b_dec");
    const G = scaled(e, st.E, 2 / B, ws.f("G", B * D, X)); // dL/dX̂  [B, D]
    e.colSum(G, B, D, dbDec, true);
    const gpSum = ws.f("gpSum", H, X); // Σ_b dL/dP [H]
    const rowScale = ws.f("rowScale", H, X); // c·Σ_b ∂φ/∂n_i, for a free decoder
    rowScale.fill(0);
    if (st.sparse) sparseGrads(inp, st, st.sparse, G, gpSum, rowScale, g);
    else denseGrads(inp, st, G, gpSum, rowScale, g);
    if (coeff !== 0 && !opt.unitNormDecoder) decoderNormGrad(e, p.get("W_dec"), st, coeff / B, rowScale, g.get("W_dec"));
    const dbEnc = g.get("b_enc");
    for (let i = 0; i < H; i++) dbEnc[i] += gpSum[i];
    if (opt.applyBDecToInput && !opt.fixedInputBias) backpropInputBias(e, gpSum, p.get("W_enc"), dims, dbDec);
  }

  /** gradients over the active (row, latent) pairs; gu = dL/dU there, then dP = gu (U > 0) */
  function sparseGrads({ e, p, X, B, coeff }: StepInput, st: ReluState, c: SparseCode, G: Arr, gpSum: Arr, rowScale: Arr, g: ParamSet): void {
    const { m, idx, u, f, len } = c;
    const cB = coeff / B;
    const gu = ws.f("spGU", B * m, X);
    // dW_dec += Fᵀ G over active entries, and gu = dL/dF there
    e.scatterDot(idx, f, u, B, m, G, p.get("W_dec"), H, D, g.get("W_dec"), gu);
    const s = opt.scaleParam ? p.get(opt.scaleParam) : null, ds = opt.scaleParam ? g.get(opt.scaleParam) : null;
    gpSum.fill(0);
    // the padding's gu is 0 already (scatterDot writes 0 where u = 0)
    for (let b = 0; b < B; b++) {
      for (let j = b * m, j1 = j + len[b]; j < j1; j++) {
        const i = idx[j];
        if (s) { ds![i] += gu[j] * u[j]; gu[j] *= s[i]; }
        if (coeff !== 0) {
          gu[j] += cB * penalty.du(u[j], st.norms[i]);
          if (!opt.unitNormDecoder && !penalty.linear) rowScale[i] += cB * penalty.dn(u[j], st.norms[i]);
        }
        gpSum[i] += gu[j];
      }
    }
    e.scatterRows(idx, gu, B, m, st.Xc, H, D, g.get("W_enc")); // dW_enc += dPᵀ Xc over active entries
  }

  /** gradients with GEMMs over the dense code */
  function denseGrads({ e, p, X, B, coeff }: StepInput, st: ReluState, G: Arr, gpSum: Arr, rowScale: Arr, g: ParamSet): void {
    const { U, F, norms } = st;
    const cB = coeff / B;
    e.gemm(true, false, H, D, B, 1, F, G, 1, g.get("W_dec")); // dW_dec += Fᵀ G
    const GU = ws.f("GU", B * H, X);
    e.gemm(false, true, B, H, D, 1, G, p.get("W_dec"), 0, GU); // dL/dF = G W_decᵀ  [B, H]
    if (opt.scaleParam) {
      // F = U ⊙ s: ds_i = Σ_b dF_bi U_bi, dU = dF ⊙ s
      const s = p.get(opt.scaleParam), ds = g.get(opt.scaleParam);
      for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) {
        ds[i] += GU[b * H + i] * U[b * H + i];
        GU[b * H + i] *= s[i];
      }
    }
    let colAdd: Arr | null = null;
    if (coeff !== 0 && penalty.linear) {
      colAdd = ws.f("colAdd", H, X); // ∂(λ/B Σ u·n)/∂u = λ/B·n_i wherever U > 0
      for (let i = 0; i < H; i++) colAdd[i] = cB * norms[i];
    } else if (coeff !== 0) {
      for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) {
        const u = U[b * H + i];
        if (!(u > 0)) continue;
        GU[b * H + i] += cB * penalty.du(u, norms[i]);
        if (!opt.unitNormDecoder) rowScale[i] += cB * penalty.dn(u, norms[i]);
      }
    }
    e.reluBackward(GU, U, colAdd, B, H, gpSum); // GU is now dL/dP; gpSum its column sums
    e.gemm(true, false, H, D, B, 1, GU, st.Xc, 1, g.get("W_enc")); // dW_enc += dPᵀ Xc
  }

  /** ∂penalty/∂d_i = (∂penalty/∂n_i)·d_i/n_i: a row scaling of W_dec added into dW_dec */
  function decoderNormGrad(e: Engine, Wdec: Arr, st: ReluState, cB: number, rowScale: Arr, dWdec: Arr): void {
    if (penalty.linear) for (let i = 0; i < H; i++) rowScale[i] = cB * st.colSumU[i];
    for (let i = 0; i < H; i++) rowScale[i] = st.norms[i] > 0 ? rowScale[i] / st.norms[i] : 0;
    addScaledRows(e, ws, rowScale, Wdec, dims, dWdec);
  }

  return {
    variant,
    dims,
    workspaceBytes: () => ws.bytes(),
    specs: [...standardSpecs(dims), ...extraSpecs],
    unitNormDecoder: opt.unitNormDecoder,
    applyBDecToInput: opt.applyBDecToInput,
    fixedInputBias: opt.fixedInputBias ?? null,
    forward,
    backward,
  };
}

/** out[b, i] = U[b, i]·s[i]   [B, H] */
function scaleColumns(U: Arr, s: Arr, B: number, out: Arr): Arr {
  const H = s.length;
  for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) out[b * H + i] = U[b * H + i] * s[i];
  return out;
}

