// Matryoshka BatchTopK, the fast CPU path (docs/variants.md#matryoshka-batchtopk; Bussmann et al.
// 2025, arXiv 2503.17547). The code is BatchTopK's, selected once over all H latents
// (BatchSelector). The dictionary is cut into blocks by the prefix sizes m_1 < … < m_G = H (block
// j holds latents m_{j−1} ≤ i < m_j, m_0 = 0); prefix g reconstructs from blocks 1..g:
//   x̂_g = Σ_{i < m_g} f_i d_i + b_dec,   loss = (1/B) Σ_b Σ_g ‖x_b − x̂_g,b‖² + α·AuxK(x − x̂_G).
// Forward: x̂_G is BatchTopK's decode (one gather of the whole code); the inner prefixes add one
// block at a time (a gather of that block's entries each), so every selected entry is gathered
// at most twice: O(B·k·D) after the encoder GEMM, plus O(G·B·D) for the G residuals.
// Backward: latent i of block j appears in prefixes j..G, so its upstream gradient is the suffix
// sum S_j = Σ_{g ≥ j} (2/B)(x̂_g − x); each block's entries go through the sparse decoder
// backward once with their S_j, then the encoder backward runs once over the whole code.
// With one prefix (m_1 = H) every step is BatchTopK's, bit for bit.
import type { Arr } from "../../engine/types.ts";
import type { Dims, ForwardResult, SaeModel, StepInput } from "../variant.ts";
import { backpropInputBias, centerInput, residual, scaled } from "../variant.ts";
import { decoderBackward, encoderBackward, type AuxState } from "../sparse.ts";
import { batchTopKFields, batchTopKParts, thresholdForward, type BatchTopKOptions } from "../batchtopk/fast.ts";
import type { ParamSet } from "../params.ts";

export interface MatryoshkaOptions extends BatchTopKOptions {
  /** m_1 < … < m_G = H, validated by the config (src/sae/matryoshka/index.ts) */
  prefixes: readonly number[];
}

/**
 * What backward needs from a training forward: the encoder input, the residuals x̂_g − x of
 * every prefix [B, D] (E[G−1] the full reconstruction's), the code [B, k] and its values split by
 * block (blockVal[j]: the values of block j's entries, 0 elsewhere; empty with one prefix), AuxK's
 * state.
 */
interface MatryoshkaState { training: boolean; Xc: Arr; E: Arr[]; idx: Int32Array; val: Arr; k: number; blockVal: Arr[]; aux: AuxState | null }

export function createMatryoshka(dims: Dims, opt: MatryoshkaOptions): SaeModel<MatryoshkaState> {
  const { D, H } = dims;
  const prefixes = opt.prefixes;
  const G = prefixes.length;
  if (G < 1 || prefixes[G - 1] !== H || prefixes.some((m, j) => !(m > (j ? prefixes[j - 1] : 0))))
    throw new Error(`matryoshka: prefixes ${prefixes} must rise strictly and end at H = ${H}`); // the config checks this first
  // the block of each latent [H]
  const blockOf = new Int32Array(H);
  for (let j = 0, i = 0; j < G; j++) for (; i < prefixes[j]; i++) blockOf[i] = j;
  const { ws, auxk, selector } = batchTopKParts(dims, opt);

  /** the code's values split by block: out[j] holds block j's values, 0 elsewhere [B·k] each (one pass: each was a pass of its own, forward and backward) */
  const blockValues = (e: StepInput["e"], idx: Int32Array, val: Arr): Arr[] => {
    const out = Array.from({ length: G }, (_, j) => ws.f(`blockVal${j}`, val.length, val));
    for (const o of out) e.zero(o);
    for (let t = 0; t < val.length; t++) out[blockOf[idx[t]]][t] = val[t];
    return out;
  };

  return {
    variant: "matryoshka",
    ...batchTopKFields(dims, opt, ws),

    forward({ e, p, X, B, dead, auxTarget, training }): ForwardResult<MatryoshkaState> {
      const Wdec = p.get("W_dec"), bDec = p.get("b_dec");
      const Xc = centerInput(e, X, opt.fixedInputBias ?? bDec, opt.applyBDecToInput, B, D, ws.f("Xc", B * D, X));
      if (!training) {
        // inference: BatchTopK's global threshold over all H latents (the prefixes shape training only)
        const r = thresholdForward(e, ws, dims, p, Xc, X, B);
        return { ...r, state: { training: false, Xc, E: [r.E], idx: new Int32Array(0), val: r.code.F, k: 0, blockVal: [], aux: null } };
      }
      const { idx, val, k } = selector.select(e, p, Xc, B, dead, X);
      const blockVal = G > 1 ? blockValues(e, idx, val) : [];
      const E = Array.from({ length: G }, (_, g) => ws.f(`E${g}`, B * D, X));
      const sq: number[] = new Array(G);
      // the full reconstruction, as BatchTopK decodes it
      const Xhat = ws.f("Xhat", B * D, X);
      e.gatherRows(idx, val, B, k, Wdec, H, D, bDec, Xhat);
      sq[G - 1] = residual(e, Xhat, X, E[G - 1]);
      // the inner prefixes, one block at a time: E_0 = b_dec + block 0 − x, E_g = E_{g−1} + block g
      if (G > 1) {
        const Y = ws.f("blockHat", B * D, X);
        for (let g = 0; g < G - 1; g++) {
          const vg = blockVal[g];
          if (g === 0) {
            e.gatherRows(idx, vg, B, k, Wdec, H, D, bDec, Y);
            sq[0] = residual(e, Y, X, E[0]);
            continue;
          }
          e.gatherRows(idx, vg, B, k, Wdec, H, D, null, Y);
          sq[g] = e.axpby(1, E[g - 1], 1, Y, E[g]); // E_g = E_{g−1} + Y and its Σ of squares
        }
      }
      const mse = sq[G - 1] / B;
      let recon = 0;
      for (let g = 0; g < G; g++) recon += sq[g] / B;
      const { loss: aux, state: auxState } = auxk.finish(e, p.get("b_enc"), Wdec, E[G - 1], auxTarget);
      return {
        terms: { loss: recon + auxk.alpha * aux, mse, sparsity: 0, aux },
        code: { kind: "sparse", k, idx, val },
        Xhat,
        state: { training: true, Xc, E, idx, val, k, blockVal, aux: auxState },
      };
    },

    backward({ e, p, X, B }: StepInput, { training, Xc, E, idx, val, k, blockVal, aux }: MatryoshkaState, g: ParamSet): void {
      if (!training) throw new Error("matryoshka: backward needs a training forward (training: true)");
      const Wenc = p.get("W_enc"), Wdec = p.get("W_dec");
      const dWenc = g.get("W_enc"), dbEnc = g.get("b_enc"), dWdec = g.get("W_dec"), dbDec = g.get("b_dec");
      const gpSum = ws.f("gpSum", H, X);
      gpSum.fill(0);
      // S_j = Σ_{g ≥ j} (2/B) E_g, from the last block down; the code's dF collects into gp [B, k]
      const S = scaled(e, E[G - 1], 2 / B, ws.f("G", B * D, X));
      const gp = ws.f("gp", B * k, X);
      const gpBlock = G > 1 ? ws.f("gpBlock", B * k, X) : gp;
      for (let j = G - 1; j >= 0; j--) {
        if (j < G - 1) e.axpby(1, S, 2 / B, E[j], S);
        decoderBackward(e, dims, B, k, idx, G > 1 ? blockVal[j] : val, S, Wdec, dWdec, gpBlock);
        // gpBlock is 0 outside block j (decoderBackward writes 0 where its values are 0), so the
        // blocks' dF add up exactly to the code's
        if (G > 1) {
          if (j === G - 1) gp.set(gpBlock);
          else e.axpby(1, gp, 1, gpBlock, gp);
        }
      }
      e.colSum(S, B, D, dbDec, true); // S_1 = Σ_g (2/B) E_g: every prefix adds b_dec
      encoderBackward(e, dims, B, k, idx, val, gp, Xc, dWenc, gpSum);
      auxk.backward(e, aux, B, Wdec, Xc, dWdec, dWenc, gpSum);
      for (let i = 0; i < H; i++) dbEnc[i] += gpSum[i];
      if (opt.applyBDecToInput && !opt.fixedInputBias) backpropInputBias(e, gpSum, Wenc, dims, dbDec);
    },
  };
}
