// Pieces shared by the variants whose code is K (index, value) pairs per row (TopK, BatchTopK,
// Matryoshka BatchTopK): the gradient through the selected latents, and AuxK (Gao et al. 2024,
// docs/variants.md#auxk).
import type { Arr, Engine } from "../engine/types.ts";
import type { Dims } from "./variant.ts";
import { Workspace, backpropInputBias, scaled } from "./variant.ts";
import type { ParamSet } from "./params.ts";

/** the sparse computation runs when no row has more than H / SPARSE_DENOMINATOR active latents */
export const SPARSE_DENOMINATOR = 16;

/**
 * The positive entries of P + bias [B, H] as a code of (index, value) pairs per row, padded to a
 * width that follows the largest row count (with a margin, so re-allocation is rare), or null when some row has
 * more than H/SPARSE_DENOMINATOR: then the caller's dense computation is cheaper. Used by the
 * ReLU family and Gated. `path` forces one answer (tests).
 */
export class Sparsifier {
  private kmax: number;
  private readonly H: number;
  private readonly path: "auto" | "dense" | "sparse";

  constructor(H: number, path: "auto" | "dense" | "sparse" = "auto") {
    this.H = H;
    this.path = path;
    this.kmax = Math.max(1, Math.floor(H / SPARSE_DENOMINATOR));
  }

  run(e: Engine, ws: Workspace, P: Arr, bias: Arr, B: number): PackedCode | null {
    if (this.path === "dense") return null;
    const H = this.H;
    const limit = this.path === "sparse" ? H : Math.max(1, Math.floor(H / SPARSE_DENOMINATOR));
    for (;;) {
      const width = this.kmax;
      const idx = ws.i("spIdx", B * width), val = ws.f("spVal", B * width, P);
      const m = e.rowsAbove(P, bias, 0, B, H, width, idx, val, limit);
      // over the limit first: rowsAbove stops scanning once a row passes it, so the code would hold
      // rows it never wrote (the width can exceed the limit after an overflow, below)
      if (m > limit) return null;
      if (m <= width) {
        // The native kernels look at the padding too (the TypeScript loops stop at len): when the
        // widest row needs less than half the room, the next batch gets 1.5x what this one needed
        // (at L0 ≈ 0.5% of H the first width, H/16, was 90% padding). Rarely changed, so the
        // workspace is rarely reallocated; a batch that overflows is scanned again (below).
        if (2 * m < width) this.kmax = Math.max(1, Math.ceil(1.5 * m));
        return { m: width, idx, val, len: rowLengths(ws, val, B, width) };
      }
      this.kmax = Math.min(H, Math.ceil(1.25 * m));
    }
  }
}

/**
 * A code [B, m] in rowsAbove's layout: row b's len[b] entries first (ascending columns, values
 * > 0), then zero padding. The variants' per-entry loops walk b·m .. b·m + len[b] only: the padding
 * is most of the width (m is the Sparsifier's width, 1.5× the widest row seen), and a TypeScript
 * loop costs ~3 ns an entry here.
 */
export interface PackedCode { m: number; idx: Int32Array; val: Arr; len: Int32Array }

/** entries per row of a packed code: the position of each row's first zero */
function rowLengths(ws: Workspace, val: Arr, B: number, m: number): Int32Array {
  const len = ws.i("spLen", B);
  for (let b = 0; b < B; b++) {
    const j0 = b * m;
    let j = j0;
    while (j < j0 + m && val[j] > 0) j++;
    len[b] = j - j0;
  }
  return len;
}

/** what codeBackward reads of its variant's forward: the encoder input, the residual, the code */
export interface CodeState { Xc: Arr; E: Arr; idx: Int32Array; val: Arr; k: number; aux: AuxState | null }

/**
 * The backward of a code of k (index, value) pairs per row with AuxK's (TopK, BatchTopK) into the
 * gradients of W_enc, b_enc, W_dec, b_dec: W_dec's and W_enc's written whole, their rows' squares
 * summed while each row is in L1 (the variants' writesGradients; docs/training.md#one-step). Returns
 * Σ g² over the four. inputBias: the encoder input subtracts b_dec (b_dec's gradient through it).
 */
export function codeBackward(e: Engine, ws: Workspace, auxk: AuxK, dims: Dims, p: ParamSet, g: ParamSet, B: number, { Xc, E, idx, val, k, aux }: CodeState, inputBias: boolean): number {
  const { D, H } = dims;
  const Wenc = p.get("W_enc"), Wdec = p.get("W_dec");
  const dWenc = g.get("W_enc"), dbEnc = g.get("b_enc"), dWdec = g.get("W_dec"), dbDec = g.get("b_dec");
  const gpSum = ws.f("gpSum", H, E);
  gpSum.fill(0);
  const G = scaled(e, E, 2 / B, ws.f("G", B * D, E)); // dL/dX̂ [B, D]
  e.colSum(G, B, D, dbDec, true);
  const rowSq = ws.d("rowSq", H);
  e.sparseBackward(idx, val, B, k, G, Wdec, Xc, H, D, dWdec, dWenc, gpSum, true, rowSq);
  auxk.backward(e, aux, B, Wdec, Xc, dWdec, dWenc, gpSum, rowSq);
  for (let i = 0; i < H; i++) dbEnc[i] += gpSum[i];
  if (inputBias) backpropInputBias(e, gpSum, Wenc, dims, dbDec);
  let squares = e.sumSquares(dbEnc) + e.sumSquares(dbDec);
  for (let i = 0; i < H; i++) squares += rowSq[i];
  return squares;
}

/**
 * The two halves of Engine.sparseBackward (a sparse code's backward), for Matryoshka, whose blocks
 * of latents each take their own upstream gradient G. The decoder half: dW_dec[idx] += val·G and
 * dF = G·W_dec[idx]ᵀ into gp [B, k] (0 where val = 0).
 */
export function decoderBackward(e: Engine, { D, H }: Dims, B: number, k: number, idx: Int32Array, val: Arr, G: Arr, Wdec: Arr, dWdec: Arr, gp: Arr): void {
  e.scatterDot(idx, val, val, B, k, G, Wdec, H, D, dWdec, gp);
}

/** The encoder half: dP = dF (gp, overwritten) where val > 0, Σ_b dP into gpSum [H], dW_enc[idx] += dP·Xc. */
export function encoderBackward(e: Engine, { D, H }: Dims, B: number, k: number, idx: Int32Array, val: Arr, gp: Arr, Xc: Arr, dWenc: Arr, gpSum: Arr): void {
  for (let j = 0; j < B * k; j++) {
    if (!(val[j] > 0)) gp[j] = 0;
    gpSum[idx[j]] += gp[j];
  }
  e.scatterRows(idx, gp, B, k, Xc, H, D, dWenc);
}

/**
 * AuxK: each row's k_aux largest pre-activations among dead latents (ReLU'd) reconstruct the
 * residual e = sg(x − x̂) without b_dec; loss Σ‖ê − e‖² / Σ‖e − ē‖² (variance-normalised; 0 when the
 * denominator is 0 or no latent is dead). Gradients reach only the dead latents.
 *
 * Two computations of the same thing. With few dead latents (n_dead ≤ DENSE_AUX_FACTOR·k_aux the
 * aux code is dense enough) the dead latents' rows are compacted and the aux code is decoded and
 * back-propagated with GEMMs over [B, n_dead]; with many, by gathers and scatters over the
 * B·k_aux selected (row, latent) pairs, like the main code.
 */
export const DENSE_AUX_FACTOR = 8;

/** what AuxK's backward needs from its forward; null when AuxK was off */
export interface AuxState {
  kAux: number;
  diff: Arr;
  den: number;
  /** sparse path: selected latents and values [B, kAux] */
  idx?: Int32Array;
  val?: Arr;
  /** dense path: dead latent ids [n], their code Z [B, n] and decoder rows [n, D] */
  dead?: Int32Array;
  Z?: Arr;
  Wd?: Arr;
}

export class AuxK {
  private sel: { B: number; kAux: number; dead: Uint8Array; idx: Int32Array; val: Arr; ids?: Int32Array; Pd?: Arr } | null = null;
  private readonly ws: Workspace;
  private readonly dims: Dims;
  private readonly kAuxMax: number;
  readonly alpha: number;
  /** test hook: force one of the two computations */
  path: "auto" | "dense" | "sparse" = "auto";

  constructor(dims: Dims, kAuxMax: number, alpha: number, ws: Workspace) {
    this.dims = dims;
    this.kAuxMax = kAuxMax;
    this.alpha = alpha;
    this.ws = ws;
  }

  /**
   * Selection, in up to three calls so that the encoder can hand over its pre-activations block by
   * block: begin() with the encoder input Xc [B, D] and W_enc, then select() for each block of rows
   * of P (pre-activations without b_enc, [rows, H]), then finish() with E = X̂ − X [B, D]. finish returns the loss before α and the state backward takes.
   * With `picks` the caller's top-k copies the dense path's columns out of each block (see picks()).
   */
  begin(e: Engine, B: number, dead: Uint8Array | null, Xc: Arr, Wenc: Arr, picks = false): void {
    const { D, H } = this.dims;
    const like = Xc;
    const ws = this.ws;
    this.sel = null;
    const nDead = dead ? dead.reduce((s, v) => s + v, 0) : 0;
    if (!dead || nDead === 0 || this.alpha === 0) return;
    const kAux = Math.min(this.kAuxMax, nDead);
    const dense = this.path === "dense" || (this.path === "auto" && nDead <= DENSE_AUX_FACTOR * kAux);
    const idx = ws.i("auxIdx", B * kAux), val = ws.f("auxVal", B * kAux, like);
    if (dense) {
      const ids = ws.i("auxDead", nDead);
      for (let i = 0, j = 0; i < H; i++) if (dead[i]) ids[j++] = i;
      const Pd = ws.f("auxP", B * nDead, like);
      this.sel = { B, kAux, dead, idx, val, ids, Pd };
      // the dead latents' pre-activations [B, n]: copied out of the encoder's blocks by the
      // caller's top-k, row by row while each row is in cache (docs/engine.md#auxk-paths), or by a
      // GEMM of their own, Xc·W_enc[dead]ᵀ (picking them out of a whole block afterwards cost
      // 20 ms a block in cache misses, this GEMM 1–2 ms)
      if (picks) return;
      const We = ws.f("auxWe", nDead * D, like);
      for (let j = 0; j < nDead; j++) We.set(Wenc.subarray(ids[j] * D, (ids[j] + 1) * D), j * D);
      e.gemm(false, true, B, nDead, D, 1, Xc.subarray(0, B * D), We, 0, Pd);
    } else {
      this.sel = { B, kAux, dead, idx, val };
    }
  }

  /**
   * After begin(…, picks = true): the columns to copy out of the block of rows [r0, r0 + rows) and
   * where (topkRows' pick and picked), or null when the dense path is not taken.
   */
  picks(r0: number, rows: number): { pick: Int32Array; picked: Arr } | null {
    const sel = this.sel;
    if (!sel?.ids) return null;
    const n = sel.ids.length;
    return { pick: sel.ids, picked: sel.Pd!.subarray(r0 * n, (r0 + rows) * n) };
  }

  select(e: Engine, P: Arr, bEnc: Arr, r0: number, rows: number): void {
    const sel = this.sel;
    if (!sel) return;
    const { H } = this.dims;
    if (sel.ids) return; // the dense path's pre-activations came from begin() or the caller's top-k
    const k = sel.kAux;
    e.topkRows(P, bEnc, sel.dead, rows, H, k, sel.idx.subarray(r0 * k, (r0 + rows) * k), sel.val.subarray(r0 * k, (r0 + rows) * k));
  }

  finish(e: Engine, bEnc: Arr, Wdec: Arr, E: Arr, auxTarget?: Arr): { loss: number; state: AuxState | null } {
    const sel = this.sel;
    if (!sel) return { loss: 0, state: null };
    const { D } = this.dims;
    const { B, kAux, idx, val } = sel;
    const ws = this.ws;
    const eHat = ws.f("auxHat", B * D, E);
    let st: Omit<AuxState, "diff" | "den">;
    if (sel.ids) {
      const ids = sel.ids, n = ids.length;
      const bd = ws.f("auxB", n, E);
      for (let j = 0; j < n; j++) bd[j] = bEnc[ids[j]];
      const Z = ws.f("auxZ", B * n, E);
      if (kAux === n) {
        // every dead latent is selected (k_aux ≥ number dead): the aux code is ReLU(P_dead + b)
        Z.set(sel.Pd!);
        e.addBias(Z, bd, B, n, true);
      } else {
        e.topkRows(sel.Pd!, bd, null, B, n, kAux, idx, val);
        Z.fill(0);
        for (let b = 0; b < B; b++) for (let j = 0; j < kAux; j++) Z[b * n + idx[b * kAux + j]] = val[b * kAux + j];
      }
      const Wd = ws.f("auxWd", n * D, E);
      for (let j = 0; j < n; j++) Wd.set(Wdec.subarray(ids[j] * D, (ids[j] + 1) * D), j * D);
      e.gemm(false, false, B, D, n, 1, Z, Wd, 0, eHat); // ê = Z W_dec[dead]   [B, D]
      st = { kAux, dead: ids, Z, Wd };
    } else {
      e.gatherRows(idx, val, B, kAux, Wdec, this.dims.H, D, null, eHat);
      st = { kAux, idx, val };
    }
    // target e = sg(x − x̂) = −E unless a test fixes it; ē its per-dimension batch mean
    const T = auxTarget ?? E, sign = auxTarget ? 1 : -1;
    // the mean accumulates in float64, so that a batch of equal rows has den = 0 exactly
    const sum = ws.d("auxSum", D), mean = ws.f("auxMean", D, E);
    e.colSum(T.subarray(0, B * D), B, D, sum, false);
    for (let d = 0; d < D; d++) mean[d] = (sign * sum[d]) / B;
    const den = e.axpby(sign, T, -1, mean, null); // Σ ‖e − ē‖²
    const diff = ws.f("auxDiff", B * D, E);
    const num = e.axpby(1, eHat, -sign, T, diff); // diff = ê − e, num = Σ ‖ê − e‖²
    if (!(den > 0)) return { loss: 0, state: null };
    return { loss: num / den, state: { ...st, diff, den } };
  }

  /**
   * d(α·num/den)/dê = α·2/den·(ê − e), pushed through the aux selection. ê has no b_dec. rowSq [H]
   * (Engine.sparseBackward's, or null) is kept true for the rows this adds to.
   */
  backward(e: Engine, s: AuxState | null, B: number, Wdec: Arr, Xc: Arr, dWdec: Arr, dWenc: Arr, gpSum: Arr, rowSq: Float64Array | null = null): void {
    if (!s) return;
    const { D } = this.dims;
    const Ga = scaled(e, s.diff, (this.alpha * 2) / s.den, this.ws.f("Gaux", B * D, s.diff));
    if (!s.dead) {
      // rows all over the decoder: rowSq, if asked for, is taken again for every latent
      e.sparseBackward(s.idx!, s.val!, B, s.kAux, Ga, Wdec, Xc, this.dims.H, D, dWdec, dWenc, gpSum, false, rowSq);
      return;
    }
    const n = s.dead.length, Z = s.Z!, ws = this.ws;
    const dW = ws.f("auxDW", n * D, Ga);
    e.gemm(true, false, n, D, B, 1, Z, Ga, 0, dW); // dW_dec[dead] = Zᵀ G   [n, D]
    addRows(dWdec, dW, s.dead, D);
    const GZ = ws.f("auxGZ", B * n, Ga);
    e.gemm(false, true, B, n, D, 1, Ga, s.Wd!, 0, GZ); // dZ = G W_dec[dead]ᵀ   [B, n]
    const colSum = ws.f("auxColSum", n, Ga);
    e.reluBackward(GZ, Z, null, B, n, colSum); // only where the aux code is positive
    e.gemm(true, false, n, D, B, 1, GZ, Xc, 0, dW); // dW_enc[dead] = dPᵀ Xc
    addRows(dWenc, dW, s.dead, D);
    for (let j = 0; j < n; j++) gpSum[s.dead[j]] += colSum[j];
    if (rowSq)
      for (const i of s.dead) rowSq[i] = e.sumSquares(dWdec.subarray(i * D, (i + 1) * D)) + e.sumSquares(dWenc.subarray(i * D, (i + 1) * D));
  }
}

/** out[ids[j], :] += rows[j, :] */
function addRows(out: Arr, rows: Arr, ids: Int32Array, D: number): void {
  for (let j = 0; j < ids.length; j++) {
    const o = ids[j] * D;
    for (let d = 0; d < D; d++) out[o + d] += rows[j * D + d];
  }
}
