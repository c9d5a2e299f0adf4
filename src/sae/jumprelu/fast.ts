// JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity with
// JumpReLU Sparse Autoencoders", arXiv 2407.14435; docs/variants.md#jumprelu):
//   P = (X − a·b_dec) W_encᵀ + b_enc;  F = P ⊙ H(P − θ);  X̂ = F W_dec + b_dec
//   loss = mean_b [ ‖x − x̂‖² + λ·Σ_i H(P_i − θ_i) ]     (λ = sae.l0_coefficient)
// θ > 0 is stored as log θ. The step function has no useful derivative; θ learns through the
// straight-through pseudo-derivatives with a rectangle kernel K(u) = 1[|u| < ½] of bandwidth ε:
//   ∂F/∂θ := −(θ/ε)·K((P − θ)/ε),  ∂H(P − θ)/∂θ := −(1/ε)·K((P − θ)/ε),  ∂H/∂P := 0
// and ∂L/∂log θ = θ·∂L/∂θ (the chain rule the BatchTopK repository forgets). So the L0 term trains
// only θ; W_enc and b_enc learn from the reconstruction alone (∂F/∂P = H(P − θ)).
import type { Arr } from "../../engine/types.ts";
import type { Dims, ForwardResult, SaeModel, StepInput } from "../variant.ts";
import { Workspace, backpropInputBias, centerInput, denseDecode, residual, scaled, standardSpecs } from "../variant.ts";
import type { ParamSet } from "../params.ts";
import { Sparsifier } from "../sparse.ts";

export interface JumpReluOptions {
  /** ε of the rectangle kernel, in (normalised) activation units */
  bandwidth: number;
  unitNormDecoder: boolean;
  applyBDecToInput: boolean;
  /** subtract this constant instead of b_dec (see SaeModel.fixedInputBias) */
  fixedInputBias?: Arr | null;
  /** test hook: force one computation */
  path?: "auto" | "dense" | "sparse";
}

/**
 * What backward needs. A sparse code keeps every entry with P > θ − ε/2 (the active ones and those
 * in the kernel's band, which θ's gradient needs), with f = 0 for the band below θ.
 */
interface JumpReluState {
  Xc: Arr; P: Arr; F: Arr; E: Arr; theta: Arr;
  /** the sparse code: candidates idx/cand [B, m], the code f, and P + b_enc at each candidate (pre) */
  sparse: { m: number; idx: Int32Array; cand: Arr; f: Arr; pre: Float64Array; len: Int32Array } | null;
}

export function createJumpRelu(dims: Dims, opt: JumpReluOptions): SaeModel<JumpReluState> {
  const { D, H } = dims;
  const ws = new Workspace();
  const eps = opt.bandwidth;
  const sparsifier = new Sparsifier(H, opt.path);

  return {
    variant: "jumprelu",
    dims,
    workspaceBytes: () => ws.bytes(),
    specs: [...standardSpecs(dims), { name: "log_threshold", shape: [H], groups: ["encoder", "threshold"] }],
    unitNormDecoder: opt.unitNormDecoder,
    applyBDecToInput: opt.applyBDecToInput,
    fixedInputBias: opt.fixedInputBias ?? null,

    forward({ e, p, X, B, coeff }): ForwardResult<JumpReluState> {
      let F: Arr | null = null;
      let sparse: JumpReluState["sparse"] = null;
      const Wenc = p.get("W_enc"), bEnc = p.get("b_enc"), Wdec = p.get("W_dec"), bDec = p.get("b_dec");
      const logT = p.get("log_threshold");
      const Xc = centerInput(e, X, opt.fixedInputBias ?? bDec, opt.applyBDecToInput, B, D, ws.f("Xc", B * D, X));
      const P = ws.f("P", B * H, X);
      e.gemm(false, true, B, H, D, 1, Xc, Wenc, 0, P); // without b_enc
      const theta = ws.f("theta", H, X);
      for (let i = 0; i < H; i++) theta[i] = Math.exp(logT[i]);
      // candidates: P + b_enc − θ + ε/2 > 0, a superset (by a hair, for rounding) of P + b_enc > θ − ε/2
      const shift = ws.f("shift", H, X);
      for (let i = 0; i < H; i++) shift[i] = bEnc[i] - theta[i] + 0.5 * eps * (1 + 1e-6);
      const sp = sparsifier.run(e, ws, P, shift, B);
      const Xhat = ws.f("Xhat", B * D, X);
      let l0 = 0;
      if (sp) {
        const { m, idx, val: cand, len } = sp;
        const f = ws.f("spF", B * m, X);
        f.fill(0); // the padding
        // P + b_enc at each candidate in float64, for the forward and backward's band test (reading
        // P [B, H] at the candidates again there cost a cache miss each)
        const pre = ws.d("spPre", B * m);
        e.valuesAt(P, bEnc, B, H, idx, cand, m, pre);
        for (let b = 0; b < B; b++) {
          for (let j = b * m, j1 = j + len[b]; j < j1; j++) {
            const i = idx[j], v = pre[j];
            const on = v > theta[i];
            f[j] = on ? v : 0;
            l0 += on ? 1 : 0;
          }
        }
        sparse = { m, idx, cand, f, pre, len };
        e.gatherRows(idx, f, B, m, Wdec, H, D, bDec, Xhat);
      } else {
        sparse = null;
        e.addBias(P, bEnc, B, H, false);
        F = ws.f("F", B * H, X);
        for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) {
          const v = P[b * H + i];
          const on = v > theta[i];
          F[b * H + i] = on ? v : 0;
          l0 += on ? 1 : 0;
        }
        denseDecode(e, F, Wdec, bDec, dims, B, Xhat);
      }
      const E = ws.f("E", B * D, X);
      const mse = residual(e, Xhat, X, E) / B;
      const sparsity = (coeff * l0) / B;
      const code = sparse ? { kind: "sparse" as const, k: sparse.m, idx: sparse.idx, val: sparse.f } : { kind: "dense" as const, F: F! };
      return { terms: { loss: mse + sparsity, mse, sparsity, aux: 0 }, code, Xhat, state: { Xc, P, F: F ?? P, E, theta, sparse } };
    },

    backward({ e, p, X, B, coeff }: StepInput, { Xc, P, F, E, theta, sparse }: JumpReluState, g: ParamSet): void {
      const Wenc = p.get("W_enc"), Wdec = p.get("W_dec");
      const dWenc = g.get("W_enc"), dbEnc = g.get("b_enc"), dWdec = g.get("W_dec"), dbDec = g.get("b_dec");
      const dLogT = g.get("log_threshold");
      const G = scaled(e, E, 2 / B, ws.f("G", B * D, X));
      e.colSum(G, B, D, dbDec, true);
      // θ's pseudo-gradient: only pre-activations within ε/2 of the threshold contribute
      const c = coeff / B;
      const dTheta = ws.f("dTheta", H, X);
      dTheta.fill(0);
      const gpSum = ws.f("gpSum", H, X);
      if (sparse) {
        const { m, idx, cand, f, pre, len } = sparse;
        // dW_dec += Fᵀ G over the active entries, gf = dL/dF at every candidate (0 on the padding)
        const gf = ws.f("spGF", B * m, X);
        e.scatterDot(idx, f, cand, B, m, G, Wdec, H, D, dWdec, gf);
        gpSum.fill(0);
        for (let b = 0; b < B; b++) {
          for (let j = b * m, j1 = j + len[b]; j < j1; j++) {
            const i = idx[j], v = pre[j];
            if (Math.abs(v - theta[i]) < eps / 2) dTheta[i] += -(theta[i] / eps) * gf[j] - c / eps;
            if (!(f[j] !== 0)) gf[j] = 0; // ∂F/∂P = H(P − θ)
            gpSum[i] += gf[j];
          }
        }
        e.scatterRows(idx, gf, B, m, Xc, H, D, dWenc); // dW_enc += dPᵀ Xc over the active entries
      } else {
        e.gemm(true, false, H, D, B, 1, F, G, 1, dWdec);
        const GF = ws.f("GF", B * H, X);
        e.gemm(false, true, B, H, D, 1, G, Wdec, 0, GF);
        for (let b = 0; b < B; b++) for (let i = 0; i < H; i++) {
          if (Math.abs(P[b * H + i] - theta[i]) < eps / 2) dTheta[i] += -(theta[i] / eps) * GF[b * H + i] - c / eps;
        }
        e.reluBackward(GF, F, null, B, H, gpSum); // ∂F/∂P = H(P − θ): F ≠ 0 exactly there (θ > 0)
        e.gemm(true, false, H, D, B, 1, GF, Xc, 1, dWenc);
      }
      for (let i = 0; i < H; i++) dLogT[i] += theta[i] * dTheta[i];
      for (let i = 0; i < H; i++) dbEnc[i] += gpSum[i];
      if (opt.applyBDecToInput && !opt.fixedInputBias) backpropInputBias(e, gpSum, Wenc, dims, dbDec);
    },
  };
}
